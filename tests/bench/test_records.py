"""benchmarks/records.py: a recipe over seeds, each a fresh `lenet train`; per-seed results
kept as they end, a rerun skipping them; the summary, the table and the plot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_dataset

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "benchmarks" / "records.py"


def records(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RECORDS), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_records_over_seeds_resume_and_summarise(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, n_train=200, n_test=100)
    tiny = ["--seeds", 2, f"--train-arg=--dataset={data}", "--train-arg=--epochs=1",
            "--train-arg=--batch-size=50", "--json", tmp_path / "records.json"]
    stale = tmp_path / "runs" / "speed-90-seed0"  # a seed killed mid-run by an earlier try
    stale.mkdir(parents=True)
    (stale / "train.log").write_text("killed\n")
    first = records("speed-90", *tiny, "--out-dir", tmp_path / "runs", cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # 200 synthetic images: no record
    assert ("speed-90-seed0: an unfinished run from an earlier attempt, trained again"
            in first.stdout)
    rows = json.loads((tmp_path / "records.json").read_text())
    assert [(r["recipe"], r["seed"]) for r in rows] == [("speed-90", 0), ("speed-90", 1)]
    for row in rows:
        assert 0 <= row["test_acc"] <= 1 and row["epochs"] == 1
        assert 0 < row["clock_seconds"] < row["command_seconds"]
        assert row["parameters"] == 62_158 and row["cpu"]
    out = first.stdout
    assert "speed-90 seed 0: test acc" in out and "speed-90 seed 1: test acc" in out
    assert "n=2" in out and "per seed:" in out and "not met" in out and "CPU:" in out
    assert "too few seeds for a record" in out  # speed-90's record needs n >= 10
    # run again: both seeds are there, nothing retrained, the same summary
    again = records("speed-90", *tiny, cwd=tmp_path)
    assert "seed 0: test acc" not in again.stdout
    assert again.stdout.split("\n", 1)[1] == out.split("\n", 4)[4]
    # only the summary, from the file: a Markdown table and a plot
    table = records("--from", tmp_path / "records.json", "--markdown", "--plot",
                    tmp_path / "frontier.png", "--train-arg=--dataset=" + str(data),
                    "--train-arg=--epochs=1", "--train-arg=--batch-size=50", cwd=tmp_path)
    assert "| 0.90 in the least time | >= 0.900 in <= 3 s | `speed-90` | 62,158 |" in table.stdout
    assert "| 2 | " in table.stdout and "| no |" in table.stdout
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_records_refuses_an_unknown_record_without_seeds(tmp_path):
    done = records("no-such-record", cwd=tmp_path)
    assert done.returncode == 2 and "not a record; give --seeds" in done.stderr


def test_every_record_has_a_recipe_within_its_limits_and_a_sweep_file():
    sys.path.insert(0, str(RECORDS.parent))
    try:
        import records as module
    finally:
        sys.path.remove(str(RECORDS.parent))
    from lenet.models.config import MODELS
    from lenet.models.network import build_model
    from lenet.training.config import RECIPES, TrainConfig

    for name, record in module.RECORDS.items():
        if name not in RECIPES:  # a record without a recipe yet: its row says "no recipe"
            continue
        config = TrainConfig.from_recipe(name)
        model = config.model_config(num_classes=10, image_size=(28, 28))
        if record.max_parameters is not None:
            assert build_model(model).num_parameters <= record.max_parameters, name
        assert (ROOT / "sweeps" / f"{name}.toml").exists(), f"{name}: how was it found?"
        assert config.val_split is None  # tuned on a validation slice; the record is test
    classic = TrainConfig.from_recipe("classic-best")
    assert classic.model_config(num_classes=10, image_size=(28, 28)) == MODELS["lenet5"]
