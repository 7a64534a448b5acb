"""Faults that really happen: a corrupt checkpoint, a full disk, two runs with one name, a
killed owner, files and names from someone else. (The kill -9 campaign with figures is
benchmarks/faults.py; the fuzzing is tests/test_fuzz.py.)"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import lenet_cli

from lenet.base import atomic
from lenet.base.lock import RunLock, RunLocked
from lenet.errors import ConfigError, LenetError
from lenet.models.network import LeNet
from lenet.models.settings import resolve_model_config
from lenet.run.directory import RunDir
from lenet.sweeps.spec import load_spec
from lenet.training import checkpoint
from lenet.training.config import TrainConfig


def payload(epoch: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    config = resolve_model_config("lenet5")
    return {"model_config": config.to_dict(), "model_state": LeNet(config).state_dict(),
            "epoch": epoch, "history": [{"epoch": epoch}]}




def train_one_epoch(capsys, out_dir) -> None:
    """A small run `r` of one epoch on the synthetic data, into `out_dir`."""
    code, _, _ = lenet_cli(capsys, "train", "--dataset", "synthetic", "--epochs", "1",
                           "--batch-size", "50", "--out-dir", out_dir,
                           "--name", "r", "--no-progress")
    assert code == 0


# --- checkpoint integrity -------------------------------------------------------------------

def test_a_checkpoint_carries_a_checksum_and_the_last_two_are_kept(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for epoch in (1, 2, 3):
        checkpoint.save(path, payload(epoch, seed=epoch))
    assert checkpoint.load(path)["epoch"] == 3
    assert checkpoint.load(tmp_path / "checkpoint.prev.pt")["epoch"] == 2
    assert checkpoint.load(path)["sha256"] == checkpoint.digest(checkpoint.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def tensor_offset(path: Path) -> int:
    """A byte in the middle of the largest tensor of a checkpoint (a zip of stored records)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)  # the local header's name and extra lengths
        name, extra = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name + extra + info.file_size // 2


@pytest.mark.parametrize("damage", ["truncated", "bit in a weight", "bit anywhere", "empty"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    path = checkpoint.save(tmp_path / "checkpoint.pt", payload(1))
    size = path.stat().st_size
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:size // 2])
    elif damage == "bit in a weight":
        flip(path, tensor_offset(path))
    elif damage == "bit anywhere":
        good, expected = path.read_bytes(), checkpoint.digest(checkpoint.load(path))
        outcomes = {"refused": 0, "same content": 0}
        for at in range(0, size, max(1, size // 100)):  # ~100 places, each flipped alone
            path.write_bytes(good)
            flip(path, at)
            try:
                assert checkpoint.digest(checkpoint.load(path)) == expected
                outcomes["same content"] += 1  # zip padding, names torch does not read
            except LenetError as e:
                assert str(path) in str(e)
                outcomes["refused"] += 1
        assert outcomes["refused"] >= 50, outcomes
        return
    else:
        path.write_bytes(b"")
    with pytest.raises(checkpoint.CorruptCheckpoint, match=str(path)):
        checkpoint.load(path)


def test_a_bit_flip_in_a_weight_is_caught_by_the_checksum(tmp_path):
    path = checkpoint.save(tmp_path / "checkpoint.pt", payload(1))
    flip(path, tensor_offset(path))
    with pytest.raises(checkpoint.CorruptCheckpoint, match="does not match its checksum"):
        checkpoint.load(path)


def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, payload(1))
    checkpoint.save(path, payload(2))
    path.write_bytes(path.read_bytes()[:1000])
    notes = []
    file, content = checkpoint.load_latest(tmp_path, notes.append)
    assert file == tmp_path / "checkpoint.prev.pt" and content["epoch"] == 1
    assert str(path) in notes[0] and "previous good checkpoint" in notes[0]
    checkpoint.save(path, payload(3))  # a bad newest is replaced, never kept as previous
    assert checkpoint.load(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    assert checkpoint.load(path)["epoch"] == 3


@pytest.mark.slow
def test_lenet_resume_says_it_falls_back_and_finishes(synthetic, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, _ = lenet_cli(capsys, "train", "--dataset", "synthetic", "--epochs", "2",
                           "--batch-size", "50", "--out-dir", out, "--name", "r", "--no-progress")
    assert code == 0
    flip(out / "r" / "checkpoint.pt", tensor_offset(out / "r" / "checkpoint.pt"))
    code, stdout, err = lenet_cli(capsys, "resume", out / "r", "--epochs", "3", "--no-progress")
    assert code == 0 and "resuming at epoch 2" in stdout
    assert f"{out / 'r' / 'checkpoint.pt'}: corrupt checkpoint" in err
    assert "using the previous good checkpoint" in err
    assert checkpoint.load(out / "r")["epoch"] == 3


def test_checkpoints_cannot_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": "lenet-checkpoint", "x": Payload()}, f)
    torch.save({"format": "lenet-checkpoint", "x": Payload()}, tmp_path / "evil2.pt")
    for file in (path, tmp_path / "evil2.pt"):
        with pytest.raises(checkpoint.CorruptCheckpoint, match=str(file)):
            checkpoint.load(file)
    assert not (tmp_path / "pwned").exists()


def test_every_torch_load_is_weights_only():
    src = Path(__file__).parents[2] / "src"
    calls = [(p, line) for p in src.rglob("*.py") for line in p.read_text().splitlines()
             if "torch.load(" in line]
    assert calls and all("weights_only=True" in line for _, line in calls), calls
    assert not [p for p in src.rglob("*.py") if "allow_pickle=True" in p.read_text()]


# --- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (as root, here and in CI); elsewhere the test is skipped, failed in CI."""
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                            capture_output=True, text=True) if os.geteuid() == 0 else None
    if result is None or result.returncode != 0:
        why = "not root" if result is None else result.stderr.strip()
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI ({why})")
        pytest.skip(f"cannot mount a tmpfs ({why})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill the file system up to `leave` bytes free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def writers(run_dir: RunDir) -> dict:
    """The three kinds of record a run writes, each writing a new version."""
    return {"checkpoint": lambda n: checkpoint.save(run_dir.checkpoint, payload(n, seed=n)),
            "metrics": lambda n: run_dir.write_metrics([{"epoch": e, "loss": 0.5}
                                                        for e in range(n * 3000)]),
            "results": lambda n: run_dir.write_json(RunDir.RESULTS, {"n": n, "x": "y" * 90000 * n})}


@pytest.mark.parametrize("kind", ["checkpoint", "metrics", "results"])
def test_a_full_disk_leaves_the_previous_file_intact(small_disk, kind):
    run_dir = RunDir(small_disk)
    write = writers(run_dir)[kind]
    target = write(1)
    before = target.read_bytes()
    fill(small_disk, leave=4096)
    with pytest.raises(atomic.WriteError, match=f"{target}: cannot write") as info:
        write(2)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert target.read_bytes() == before
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize("kind", ["checkpoint", "metrics", "results"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_an_injected_write_error_leaves_the_previous_file_intact(tmp_path, monkeypatch, kind,
                                                                  code):
    run_dir = RunDir(tmp_path)
    write = writers(run_dir)[kind]
    target = write(1)
    before = target.read_bytes()
    real = Path.write_bytes if kind == "checkpoint" else Path.write_text
    name = "write_bytes" if kind == "checkpoint" else "write_text"

    def half_then_fail(self, data, *args, **kwargs):
        real(self, data[:len(data) // 2], *args, **kwargs)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, name, half_then_fail)
    with pytest.raises(atomic.WriteError, match=os.strerror(code)):
        write(2)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporaries


@pytest.mark.slow
def test_training_on_a_full_disk_ends_with_one_error_line_and_resumes(synthetic, small_disk,
                                                                       capsys):
    train_one_epoch(capsys, small_disk)
    run = small_disk / "r"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name in (
        "checkpoint.pt", "metrics.csv", "results.json")}
    fill(small_disk, leave=8192)
    code, _, err = lenet_cli(capsys, "resume", run, "--epochs", "2", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and err.startswith("lenet: error: ")
    assert "No space left on device" in err and "left as it was" in err
    assert {n: (run / n).read_bytes() for n in before} == before
    (small_disk / "filler").unlink()
    code, _, _ = lenet_cli(capsys, "resume", run, "--epochs", "2", "--no-progress")
    assert code == 0 and checkpoint.load(run)["epoch"] == 2


# --- two runs, one name ---------------------------------------------------------------------

def test_a_locked_run_is_refused_and_a_released_lock_is_not(tmp_path):
    first = RunDir.create(tmp_path, "same", default_stem="x")
    with pytest.raises(RunLocked, match=f"{tmp_path / 'same'} is in use by another lenet "
                                        f"process \\(pid {os.getpid()}\\)"):
        RunDir.create(tmp_path, "same", default_stem="x")
    first.lock.release()
    RunDir.create(tmp_path, "same", default_stem="x").lock.release()


HOLDER = textwrap.dedent("""
    import sys, time
    from lenet.base.lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
def test_a_lock_held_by_a_killed_process_does_not_block(synthetic, tmp_path, capsys):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        code, _, err = lenet_cli(capsys, "train", "--dataset", "synthetic", "--epochs", "1",
                           "--out-dir", tmp_path / "runs", "--name", "r", "--no-progress")
        assert code == 2 and err == (f"lenet: error: {run} is in use by another lenet process "
                                     f"(pid {holder.pid}); wait for it to end, or choose another"
                                     " --name\n")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / ".lock").exists()  # stale: the file stays, the lock went with its owner
    with RunLock(run):
        pass


@pytest.mark.slow
def test_two_trainings_with_one_name_at_once_one_trains(synthetic, tmp_path):
    argv = [sys.executable, "-m", "lenet", "train", "--dataset", str(synthetic), "--epochs", "1",
            "--batch-size", "20", "--out-dir", str(tmp_path / "runs"), "--name", "same",
            "--no-progress"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((p.wait(), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 2], results
    assert results[1][1].count("\n") == 1 and (
        "is in use by another lenet process" in results[1][1]
        or "already holds a run" in results[1][1])
    assert checkpoint.load(tmp_path / "runs" / "same")["epoch"] == 1


@pytest.mark.slow
def test_resume_of_a_run_in_use_is_refused(synthetic, tmp_path, capsys):
    train_one_epoch(capsys, tmp_path)
    with RunLock(tmp_path / "r"):
        code, _, err = lenet_cli(capsys, "resume", tmp_path / "r", "--epochs", "2")
    assert code == 2 and "is in use by another lenet process" in err


# --- names and files from elsewhere ---------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "a\\b", "x..y", "", "tab\there"])
def test_unsafe_run_names_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="refused"):
        TrainConfig(name=name, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="refused"):
        RunDir.create(tmp_path, name, default_stem="x")


@pytest.mark.parametrize("spec", [
    'name = "../../elsewhere"\n[[runs]]\nepochs = 1\n',
    '[[runs]]\nname = "../x"\n',
    '[[runs]]\nname = "a/b"\n',
])
def test_unsafe_sweep_names_are_refused(tmp_path, spec):
    (tmp_path / "s.toml").write_text(spec)
    with pytest.raises(ConfigError, match="refused"):
        load_spec(tmp_path / "s.toml")


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(synthetic, tmp_path,
                                                                          capsys):
    train_one_epoch(capsys, tmp_path)
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "results.json"):
        (tmp_path / "r" / name).unlink(missing_ok=True)  # as if killed in epoch 1
    code, _, err = lenet_cli(capsys, "resume", tmp_path / "r", "--no-progress")
    assert code == 0 and "has no checkpoint yet: training it from the start" in err
    assert checkpoint.load(tmp_path / "r")["epoch"] == 1


def test_broken_ood_detector_arrays_are_refused_naming_the_file(tmp_path):
    from lenet.ood.fitted import ARRAYS, FORMAT, META, VERSION, FittedDetectors

    (tmp_path / META).write_text(f'{{"format": "{FORMAT}", "version": {VERSION}, '
                                 '"detectors": ["msp"], "default": "msp", "tpr": 0.95}')
    (tmp_path / ARRAYS).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(LenetError, match=f"{tmp_path / ARRAYS}: not readable"):
        FittedDetectors.load(tmp_path)


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_resumes_to_its_results(synthetic, tmp_path,
                                                                          capsys):
    train_one_epoch(capsys, tmp_path)
    results = (tmp_path / "r" / "results.json").read_text()
    (tmp_path / "r" / "results.json").unlink()  # as if killed while fitting the OOD detectors
    code, _, _ = lenet_cli(capsys, "resume", tmp_path / "r", "--no-progress")
    assert code == 0
    same = {k for k, v in json.loads(results).items()
            if json.loads((tmp_path / "r" / "results.json").read_text()).get(k) == v}
    assert {"test_acc", "train_loss", "epoch"} <= same
    code, _, err = lenet_cli(capsys, "resume", tmp_path / "r")
    assert code == 2 and "already finished 1 of 1 epochs" in err
