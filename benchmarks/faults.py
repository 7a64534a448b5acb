"""The crash campaign: training and sweeps killed with SIGKILL at random moments, then resumed.

    python benchmarks/faults.py                 # 20 kills of a run, 4 killed sweeps (make faults)
    python benchmarks/faults.py --kills 3 --sweeps 1

Part 1 trains a small configuration (LeNet-5 with ReLU, dropout and flip+shift
augmentation, so that every RNG the checkpoint holds matters, and SGD with Nesterov momentum,
so that the optimizer's state does (lenet's native step); 3 epochs on 6,000
Fashion-MNIST images, 1 thread) once without interruption, then N times, each
killed with `kill -9` at a random moment of a chosen phase: during a training
step, during the evaluation, or during a checkpoint write (the atomic writer's
test hook LENET_TEST_SLOW_WRITES holds each write open 0.3 s before its
rename, and a leftover temporary file shows the kill landed inside it), or
while it finishes (OOD detectors, curves, results.json). Every
file left behind is checked (checkpoints by their checksum, metrics, records),
then `lenet resume RUN` finishes the run, and its final weights (SHA-256 of
every tensor) and metrics (every column but the timings) are compared with
the uninterrupted run's, bit for bit.

Part 2 runs a 6-run sweep (`lenet sweep`, 2 worker processes) once, then
again M times, each killed (the whole process group: parent and workers) at
random moments and restarted until it finishes: every trial must finish
exactly once (its results.json written once), none lost, none corrupt, and
each bit-identical to the uninterrupted sweep's.

Part 3 damages the uninterrupted run's checkpoint 1,000 times (one-bit flips
at random places) and truncates it 200 times: each copy must be refused with
a message naming the file and `load_latest` (what `lenet resume` uses) must
fall back to checkpoint.prev.pt, or, where a flip missed every byte torch
reads (zip padding), load the identical content. Part 4 (as root) fills a
4 MB tmpfs to 0-256 KB free and writes a checkpoint, metrics.csv and
results.json over their previous versions: each write completes or fails
with a WriteError, the previous file intact, no temporary file left.

The kill times are drawn from --seed; the figures do not depend on the
machine's speed (only the phases hit do). Prints one line per kill and the
totals; exits 1 if any target is missed. `--kills 0 --sweeps 0` runs parts 3
and 4 alone (with the uninterrupted run they need).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENET = [sys.executable, "-m", "lenet"]
# What a resumed run may differ in: when and where it ran, and every duration and speed
# (by name: a new timing column, such as the records' clock_seconds, is one of them too).
NOT_COMPARED = {"finished", "device"}


def timing(key: str) -> bool:
    return key in NOT_COMPARED or key.endswith(("seconds", "seconds_total", "per_sec",
                                                "per_sec_overall"))
SLOW_WRITE_S = 0.3
PHASES = ("step", "eval", "checkpoint", "finish")


# --- the child: one training run that reports its phases --------------------------------------

def child(out_dir: str, name: str, data: str, epochs: int) -> None:
    import lenet
    from lenet.run.events import Sink

    class Phases(Sink):
        """'step E', 'eval E', 'checkpoint E' on stdout as each phase of epoch E begins."""

        def __init__(self) -> None:
            self.epoch = -1

        def on_step(self, progress):
            if progress.done:
                say(f"eval {progress.epoch}")
            elif progress.epoch != self.epoch:
                self.epoch = progress.epoch
                say(f"step {progress.epoch}")

        def on_epoch(self, epoch):
            say(f"checkpoint {epoch.row['epoch'] - 1}")  # the checkpoint sink writes next

        def on_finish(self, finish):  # next: the OOD detectors, curves.png, results.json
            say(f"finish {len(finish.history) - 1}")

    def say(text: str) -> None:
        print(text, flush=True)

    run = lenet.Run.create(config(out_dir, name, data, epochs))
    with open(os.devnull, "w") as quiet:
        run.fit(sinks=[Phases(), *run.default_sinks(lenet.Console(progress=False,
                                                                   stream=quiet))])
    say("finished")


def config(out_dir: str, name: str, data: str, epochs: int):
    from lenet import TrainConfig

    return TrainConfig(dataset=data, epochs=epochs, batch_size=64, lr=0.05, momentum=0.9,
                       nesterov=True, threads=1, device="cpu", seed=0, augment="flip+shift",
                       out_dir=out_dir, name=name,
                       model_settings={"activation": "relu", "dropout": 0.1})


# --- what a run left behind --------------------------------------------------------------------

def weights_hash(run_dir: Path) -> str:
    from lenet.training import checkpoint

    state = checkpoint.load(run_dir)["model_state"]
    h = hashlib.sha256()
    for key, tensor in state.items():
        h.update(key.encode())
        h.update(tensor.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def metrics(run_dir: Path) -> tuple[list[dict], dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if not timing(k)} for row in csv.DictReader(f)]
    results = json.loads((run_dir / "results.json").read_text())
    return rows, {k: v for k, v in results.items() if not timing(k)}


def corrupt_files(run_dir: Path) -> list[str]:
    """The files of a run directory that do not read back whole."""
    from lenet.training import checkpoint

    bad = []
    for path in sorted(run_dir.glob("*")):
        try:
            if path.suffix == ".pt":
                checkpoint.load(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".csv":
                rows = list(csv.DictReader(path.open()))
                assert all(None not in row.values() for row in rows)
        except Exception as e:  # what we count
            bad.append(f"{path.name} ({type(e).__name__})")
    return bad


# --- part 1: a run killed and resumed ---------------------------------------------------------

def start_child(out: Path, name: str, data: Path, epochs: int, slow: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if slow:
        env["LENET_TEST_SLOW_WRITES"] = str(SLOW_WRITE_S)
    return subprocess.Popen([sys.executable, __file__, "--child", str(out), name, str(data),
                             str(epochs)], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def timed_phases(proc: subprocess.Popen) -> dict[tuple[str, int], float]:
    """Each phase's duration in the reference run (to draw a kill time inside it)."""
    starts, order = {}, []
    for line in proc.stdout:
        word, *rest = line.split()
        key = (word, int(rest[0]) if rest else -1)
        starts[key] = time.monotonic()
        order.append(key)
    proc.wait()
    ends = [starts[k] for k in order[1:]] + [time.monotonic()]
    return {k: end - starts[k] for k, end in zip(order, ends, strict=True)}


def kill_trial(i: int, rng: random.Random, out: Path, data: Path, epochs: int,
               durations: dict, reference: tuple) -> dict:
    phase = PHASES[i % len(PHASES)]
    epoch = rng.randrange(epochs) if phase != "finish" else epochs - 1
    window = SLOW_WRITE_S if phase == "checkpoint" else durations[(phase, epoch)]
    delay = rng.uniform(0.0, window * 0.95)
    name = f"kill{i:02d}"
    proc = start_child(out, name, data, epochs, slow=phase == "checkpoint")
    killed = False
    for line in proc.stdout:
        word, *rest = line.split()
        if word == phase and int(rest[0]) == epoch:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait()
    run_dir = out / name
    in_write = any(run_dir.glob(".checkpoint.pt.*.tmp"))
    bad = corrupt_files(run_dir)
    complete = (run_dir / "results.json").exists()  # killed after its last write: done
    resume = subprocess.run([*LENET, "resume", str(run_dir), "--no-progress"],
                            capture_output=True, text=True)
    resumed = resume.returncode == 0 or (complete and "already finished" in resume.stderr)
    same = resumed and (weights_hash(run_dir), metrics(run_dir)) == reference
    notes = [line for line in resume.stderr.splitlines() if line.startswith("lenet: note")]
    print(f"kill {i + 1:2d}: {phase:10s} of epoch {epoch + 1} +{delay * 1e3:4.0f} ms"
          f"{' (inside the write)' if in_write else ''}"
          f"{' (after results.json: complete)' if complete else ''}: killed={killed} "
          f"corrupt={bad or 0} resumed={resumed} bit-identical={same}"
          + (f" [{notes[0][12:80]}]" if notes else "")
          + ("" if resumed else f" {resume.stderr.strip()[-300:]}"), flush=True)
    return {"killed": killed, "phase": phase, "in_write": in_write, "corrupt": len(bad),
            "resumed": resumed, "identical": same}


def run_campaign(args, work: Path, data: Path) -> bool:
    out = work / "runs"
    print(f"part 1: {args.kills} runs killed with SIGKILL, then `lenet resume`")
    started = time.monotonic()
    durations = timed_phases(start_child(out, "reference", data, args.epochs, slow=False))
    reference = (weights_hash(out / "reference"), metrics(out / "reference"))
    print(f"uninterrupted run: {time.monotonic() - started:.1f} s, final test acc "
          f"{reference[1][1]['test_acc']:.4f}, weights {reference[0][:16]}")
    rng = random.Random(args.seed)
    trials = [kill_trial(i, rng, out, data, args.epochs, durations, reference)
              for i in range(args.kills)]
    n = len(trials)
    resumed = sum(t["resumed"] for t in trials)
    same = sum(t["identical"] for t in trials)
    corrupt = sum(t["corrupt"] for t in trials)
    writes = sum(t["in_write"] for t in trials)
    by_phase = ", ".join(f"{sum(t['phase'] == p for t in trials)} {p}" for p in PHASES)
    print(f"part 1: {resumed}/{n} resumed, {same}/{n} bit-identical, {corrupt} corrupt files "
          f"(kills: {by_phase}; {writes} inside a checkpoint write)")
    return resumed == same == n and corrupt == 0


# --- part 3: damaged checkpoints --------------------------------------------------------------

def run_integrity(args, work: Path) -> bool:
    """Every damaged copy of the reference run's checkpoint: refused naming the file (and
    the previous one used instead), or, where the damage missed every byte torch reads,
    loaded with the identical content; never loaded with other content."""
    from lenet.training import checkpoint

    source = work / "runs" / "reference"
    run = work / "integrity"
    shutil.copytree(source, run)
    path = run / "checkpoint.pt"
    good = path.read_bytes()
    expected = checkpoint.digest(checkpoint.load(path))
    rng = random.Random(args.seed + 2)
    damaged = [("flip", good[:at] + bytes([good[at] ^ (1 << rng.randrange(8))]) + good[at + 1:])
               for at in sorted(rng.sample(range(len(good)), min(args.flips, len(good))))]
    damaged += [("cut", good[:n]) for n in range(0, len(good), max(1, len(good) // 200))]
    counts = {"refused": 0, "named": 0, "fell back": 0, "same content": 0, "other content": 0}
    for _, data in damaged:
        path.write_bytes(data)
        notes = []
        try:
            file, payload = checkpoint.load_latest(run, notes.append)
        except Exception as e:  # what we count
            counts["other content"] += 1
            print(f"  not a fallback: {type(e).__name__}: {e}")
            continue
        if file == path:
            key = "same content" if checkpoint.digest(payload) == expected else "other content"
            counts[key] += 1
        else:
            counts["refused"] += 1
            counts["named"] += str(path) in notes[0]
            counts["fell back"] += file == run / "checkpoint.prev.pt"
    n = len(damaged)
    print(f"part 3: {n} damaged checkpoints ({args.flips} one-bit flips, {n - args.flips} "
          f"truncations): {counts['refused']} refused ({counts['named']} naming the file, "
          f"{counts['fell back']} falling back to the previous), {counts['same content']} "
          f"loaded unchanged (the flip missed every byte torch reads), "
          f"{counts['other content']} loaded with other content")
    return counts["other content"] == 0 and counts["refused"] == counts["named"] == counts[
        "fell back"]


# --- part 4: a full disk ------------------------------------------------------------------------

def run_full_disk(args, work: Path) -> bool:
    """Checkpoint, metrics and results written on a tmpfs filled to 0-64 KB free: each write
    either completes or fails with one WriteError, the previous file intact, no temporary."""
    from lenet.base import atomic
    from lenet.run.directory import RunDir
    from lenet.training import checkpoint

    disk = work / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        print(f"part 4: skipped (cannot mount a tmpfs: {mounted.stderr.strip()})")
        return True
    payload = checkpoint.load(work / "runs" / "reference")
    run_dir = RunDir(disk)
    writers = {
        "checkpoint": lambda n: checkpoint.save(run_dir.checkpoint, {**payload, "epoch": n}),
        "metrics": lambda n: run_dir.write_metrics(payload["history"] * (50 * n)),
        "results": lambda n: run_dir.write_json(RunDir.RESULTS, {"n": n, "x": "y" * 40000 * n}),
    }
    cases, intact, failed = 0, 0, 0
    try:
        for kind, write in writers.items():
            for leave in (0, 1024, 4096, 16384, 65536, 262144):
                for f in disk.iterdir():
                    f.unlink()
                target = write(1)
                before = target.read_bytes()
                stat = os.statvfs(disk)
                with open(disk / "filler", "wb") as f:
                    f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
                cases += 1
                try:
                    write(2)
                    ok = True  # it fitted: the new file must read back whole
                    if kind == "checkpoint":
                        ok = checkpoint.load(target)["epoch"] == 2
                except atomic.WriteError:
                    failed += 1
                    ok = target.read_bytes() == before
                tmp = [p.name for p in disk.iterdir() if p.name.startswith(".")]
                intact += ok and not tmp
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    print(f"part 4: full disk: {cases} writes on a 4 MB tmpfs left 0-256 KB free, {failed} "
          f"failed with ENOSPC; previous file intact (or the new one whole) and no temporary "
          f"left in {intact}/{cases}")
    return intact == cases


# --- part 2: a sweep killed and restarted ----------------------------------------------------

SWEEP = """name = "{name}"
out_dir = "{out}"
[base]
dataset = "{data}"
epochs = 2
batch_size = 64
threads = 1
device = "cpu"
augment = "flip"
"set.dropout" = 0.1
[grid]
lr = [0.05, 0.1, 0.2]
"set.activation" = ["relu", "tanh"]
"""


def sweep_once(spec: Path, timeout: float | None) -> tuple[bool, float]:
    """Run `lenet sweep`; kill its process group after `timeout` s. (finished, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen([*LENET, "sweep", str(spec), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"lenet sweep failed: {output[-800:]}")
    for line in output.splitlines():
        if "failed" in line:
            print(f"  lenet sweep said: {line[:300]}")
    return True, time.monotonic() - started


def completions(sweep_dir: Path, seen: dict[str, set]) -> None:
    """Record each trial's results.json version (inode, mtime): two versions = done twice."""
    for results in sweep_dir.glob("*/results.json"):
        st = results.stat()
        seen.setdefault(results.parent.name, set()).add((st.st_ino, st.st_mtime_ns))


def run_sweeps(args, work: Path, data: Path) -> bool:
    if args.sweeps == 0:
        return True
    print(f"part 2: {args.sweeps} sweeps of 6 runs killed (SIGKILL to the process group) "
          "and restarted until done")
    rng = random.Random(args.seed + 1)
    spec = work / "reference.toml"
    spec.write_text(SWEEP.format(name="reference", out=work / "sweeps", data=data))
    _, seconds = sweep_once(spec, None)
    ref_dir = work / "sweeps" / "reference"
    trials = sorted(p.name for p in ref_dir.iterdir() if (p / "results.json").exists())
    reference = {t: (weights_hash(ref_dir / t), metrics(ref_dir / t)) for t in trials}
    print(f"uninterrupted sweep: {seconds:.1f} s, {len(trials)} trials")
    ok = True
    for k in range(args.sweeps):
        name = f"killed{k}"
        spec = work / f"{name}.toml"
        spec.write_text(SWEEP.format(name=name, out=work / "sweeps", data=data))
        sweep_dir, seen, kills, bad = work / "sweeps" / name, {}, 0, []
        while True:
            timeout = rng.uniform(0.5, seconds) if kills < args.kills_per_sweep else None
            finished, _ = sweep_once(spec, timeout)
            completions(sweep_dir, seen)
            for trial in trials:
                if (sweep_dir / trial).is_dir():
                    bad += [f"{trial}/{f}" for f in corrupt_files(sweep_dir / trial)]
            if finished:
                break
            kills += 1
        done = [t for t in trials if (sweep_dir / t / "results.json").exists()]
        twice = [t for t, versions in seen.items() if len(versions) > 1]
        same = [t for t in done if (weights_hash(sweep_dir / t), metrics(sweep_dir / t))
                == reference[t]]
        extra = sorted({p.name for p in sweep_dir.iterdir() if p.is_dir()} - set(trials))
        print(f"sweep {k + 1}: {kills} kills; {len(done)}/{len(trials)} trials done, "
              f"{len(twice)} done twice, {len(trials) - len(done)} lost, {len(bad)} corrupt "
              f"files, {len(same)}/{len(trials)} bit-identical"
              + (f", unexpected {extra}" if extra else "") + (f" {bad}" if bad else ""),
              flush=True)
        ok = ok and len(done) == len(same) == len(trials) and not twice and not bad
    print(f"part 2: {'every trial exactly once, bit-identical' if ok else 'FAILED'}")
    return ok


def small_dataset(directory: Path, n_train: int, n_test: int) -> Path:
    """The first images of Fashion-MNIST (or synthetic ones where it is missing) as IDX."""
    from lenet.data import idx, sources

    directory.mkdir(parents=True, exist_ok=True)
    dataset = sources.load("fashion-mnist")
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        part = getattr(dataset, split)
        idx.write(directory / f"{stem}-images-idx3-ubyte.gz", part.images[:n])
        idx.write(directory / f"{stem}-labels-idx1-ubyte.gz", part.labels[:n])
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="killed runs in part 1 [20]")
    parser.add_argument("--sweeps", type=int, default=4, help="killed sweeps in part 2 [4]")
    parser.add_argument("--kills-per-sweep", type=int, default=3,
                        help="kills of each sweep before it may finish [3]")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run [3]")
    parser.add_argument("--flips", type=int, default=1000,
                        help="one-bit flips of a checkpoint in part 3 [1000]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times [0]")
    parser.add_argument("--keep", metavar="DIR", help="work here and keep the runs")
    args = parser.parse_args()
    from lenet.run.directory import cpu_model

    work = Path(args.keep or tempfile.mkdtemp(prefix="lenet-faults-"))
    print(f"crash campaign on {cpu_model()}, seed {args.seed}, in {work}")
    try:
        data = small_dataset(work / "data", 6000, 2000)
        ok = run_campaign(args, work, data)
        ok = run_sweeps(args, work, data) and ok
        ok = run_integrity(args, work) and ok
        ok = run_full_disk(args, work) and ok
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("all targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(*sys.argv[2:5], int(sys.argv[5]))
    else:
        sys.exit(main())
