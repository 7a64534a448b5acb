import json

import pytest
from conftest import lenet_cli

from lenet.cli import main


def test_summary_prints_the_books_shapes(capsys):
    code, out, _ = lenet_cli(capsys, "summary")
    assert code == 0
    assert "(1, 6, 28, 28)" in out and "(1, 16, 5, 5)" in out and "61,706" in out
    assert "416,520" in out


def test_models_lists_the_registry(capsys):
    code, out, _ = lenet_cli(capsys, "models")
    assert code == 0 and "lenet5 " in out and "lenet5-modern" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "alexnet"], "invalid choice: 'alexnet'"),
    (["train", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["train", "--lr", "-0.1"], "--lr: must be a positive number"),
    (["train", "--lr", "nan"], "--lr: expected a finite number"),
    (["train", "--val-split", "1.5"], "--val-split: must be between 0 and 1"),
    (["train", "--epochs", "ten"], "--epochs: expected a whole number"),
    (["summary", "--model", "nope"], "invalid choice"),
])
def test_bad_options_get_one_clear_line(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_output_directory(capsys, synthetic, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = lenet_cli(capsys, "train", "--dataset", "synthetic", "--epochs", "1",
                       "--out-dir", str(blocker / "runs"))
    assert code == 2
    assert err.startswith("lenet: error: cannot write the run directory") and err.count("\n") == 1


def test_missing_data_explains_how_to_get_it(capsys, isolated_sources):
    code, _, err = lenet_cli(capsys, "data", "fetch", "--offline")
    assert code == 2
    assert "Fashion-MNIST was not found" in err and "apt-get install dataset-fashion-mnist" in err


@pytest.mark.slow
def test_train_and_resume_from_the_command_line(capsys, synthetic, tmp_path):
    out_dir = str(tmp_path / "runs")
    code, out, _ = lenet_cli(capsys, "train", "--dataset", "synthetic", "--model", "lenet5-modern",
                       "--optimizer", "adam", "--lr", "0.01", "--batch-size", "50",
                       "--epochs", "1", "--out-dir", out_dir, "--name", "cli", "--no-progress")
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split()[:3] == ["epoch", "train", "loss"]
    assert any(line.startswith("loss ") and ", test acc " in line for line in lines)
    assert any(line.endswith("examples/sec on cpu") for line in lines)
    code, _, err = lenet_cli(capsys, "train", "--resume", f"{out_dir}/cli", "--lr", "0.5")
    assert code == 2 and "cannot change lr when resuming" in err
    code, out, _ = lenet_cli(capsys, "train", "--resume", f"{out_dir}/cli", "--epochs", "2",
                       "--no-progress")
    assert code == 0 and "resuming at epoch 2" in out


@pytest.mark.slow
def test_resume_takes_the_run_as_a_positional(capsys, synthetic, tmp_path):
    out_dir = str(tmp_path / "runs")
    code, _, _ = lenet_cli(capsys, "train", "--dataset", "synthetic", "--model", "lenet5-modern",
                     "--optimizer", "adam", "--lr", "0.01", "--batch-size", "50", "--epochs", "1",
                     "--out-dir", out_dir, "--name", "r", "--no-progress")
    assert code == 0
    code, out, _ = lenet_cli(capsys, "resume", f"{out_dir}/r", "--epochs", "4", "--eval-every",
                             "3", "--no-progress")
    assert code == 0 and "resuming at epoch 2" in out
    from lenet.run.directory import read_metrics
    metrics = tmp_path / "runs" / "r" / "metrics.csv"
    assert [("test_acc" in row) for row in read_metrics(metrics)] == [True, False, True, True]
    code, _, _ = lenet_cli(capsys, "resume", f"{out_dir}/r", "--epochs", "6", "--no-progress")
    assert code == 0  # the cadence it was resumed with is kept: epoch 6, and the last
    assert [("test_acc" in row) for row in read_metrics(metrics)][4:] == [False, True]
    code, _, err = lenet_cli(capsys, "resume", f"{out_dir}/r")
    assert code == 2 and err == (f"lenet: error: {out_dir}/r already finished 6 of 6 epochs; "
                                 "pass a larger --epochs to train on\n")
    code, _, err = lenet_cli(capsys, "resume", f"{out_dir}/none")
    assert code == 2 and "no checkpoint there" in err and err.count("\n") == 1


def test_a_file_that_cannot_be_written_is_one_line(capsys, synthetic, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = lenet_cli(capsys, "data", "show", "--dataset", "synthetic", "--n", "4",
                       "--out", str(blocker / "grid.png"))
    assert code == 2 and err == f"lenet: error: {blocker / 'grid.png'}: Not a directory\n"


def test_data_show_needs_out(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "show"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [("-1", "must be at least 0, got -1"),
                                            ("two", "expected a whole number, got 'two'")])
def test_sweep_workers_must_be_a_count(capsys, value, message):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "spec.toml", "--workers", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"--workers: {message}" in err and "Traceback" not in err


@pytest.mark.slow
def test_compare_writes_only_where_told(capsys, synthetic, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, _, _ = lenet_cli(capsys, "train", "--dataset", "synthetic", "--epochs", "1",
                           "--batch-size", "50", "--out-dir", "runs",
                           "--name", "c", "--no-progress")
    assert code == 0
    code, out, _ = lenet_cli(capsys, "compare", "runs/c")
    assert code == 0 and "| c " in out and "learning curves" not in out
    assert sorted(p.name for p in here.iterdir()) == ["runs"]
    code, out, _ = lenet_cli(capsys, "compare", "runs/c", "--out", "curves.png")
    assert code == 0 and "learning curves: curves.png" in out and (here / "curves.png").exists()


@pytest.mark.slow
def test_a_run_evaluated_every_second_epoch_trains_and_compares(capsys, synthetic, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = lenet_cli(capsys, "train", "--dataset", "synthetic", "--epochs", "3",
                             "--eval-every", "2", "--batch-size", "50", "--out-dir", "runs",
                             "--name", "sparse", "--no-progress")
    assert code == 0 and "test acc" in out
    from lenet.sweeps.compare import summarize_run

    summary = summarize_run(tmp_path / "runs" / "sparse")
    results = json.loads((tmp_path / "runs" / "sparse" / "results.json").read_text())
    assert summary.epochs == 3 and summary.accuracy == pytest.approx(results["test_acc"])
    code, out, _ = lenet_cli(capsys, "compare", "runs/sparse", "--out", "curves.png")
    assert code == 0 and (tmp_path / "curves.png").exists()
    with pytest.raises(SystemExit) as info:
        main(["train", "--eval-every", "0"])
    assert info.value.code == 2 and "--eval-every: must be at least 1" in capsys.readouterr().err


def test_library_notes_reach_the_terminal_as_lines_and_errors_of_other_ranks_stay_quiet(
        capsys, monkeypatch):
    from lenet.cli import training
    from lenet.errors import LenetWarning, ReportedElsewhere, note

    def models(args):
        note("the previous checkpoint is used")
        note("the previous checkpoint is used")  # each time, not once per place
        return 0

    monkeypatch.setattr(training, "run_models", models)
    code, out, err = lenet_cli(capsys, "models")
    assert code == 0 and out == ""
    assert err.count("lenet: note: the previous checkpoint is used\n") == 2, err
    with pytest.warns(LenetWarning):  # outside the CLI: an ordinary warning
        note("seen by Python code")

    def failed_elsewhere(args):
        raise ReportedElsewhere("rank 0 says why")

    monkeypatch.setattr(training, "run_models", failed_elsewhere)
    assert lenet_cli(capsys, "models") == (2, "", "")
