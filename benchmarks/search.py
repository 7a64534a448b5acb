"""Search, not only sweep: the best model under 100,000 parameters found by the old grid and by
the new search (TPE + ASHA), in trial-epochs and wall time; and a search whose driver is killed.

    python benchmarks/search.py                     # the full comparison (hours on 2 cores)
    python benchmarks/search.py --train 3000 --test 1000 --epochs 4 --trials 8   # small
    python benchmarks/search.py --kills 5           # part 2 only: the driver killed 5 times
    python benchmarks/search.py --ray 127.0.0.1:PORT ...   # the search on a Ray cluster

Part 1. The grid is sweeps/best-under-100k.toml: its two architectures (3 conv 16-32-64 k3
dense 128; 2 conv 16-32 k5 dense 48) and its recipe, crossed with the values one would have
to list for what the file fixes (--grid-lr, --grid-dropout: 3 x 2 by default), each trained
for all its epochs: 12 runs x 20 epochs = 240 trial-epochs at full size. (The file alone is
2 runs, 40 trial-epochs: a third of that is less than one full trial.) Both hold out
`--val-split` of the training set; each method's best is chosen by its final validation
accuracy, and only that run is evaluated on the test split. The search samples the same
architectures, the learning rate (log-uniform), dropout and weight decay with TPE, stops
poor trials with ASHA (grace --grace epochs, reduction 3), and trains up to --trials trials
within its budget (--budget: trial-epochs of all trials together; by default a third of
the grid's, the target, so the question is what the search finds with that much). Every
configuration either way is checked to have fewer than 100,000 parameters. With --work, a
method that ended before is not run again (WORK/METHOD.row.json).

Targets: the search's best within 0.002 test accuracy of the grid's, with at most 1/3 of the
grid's trial-epochs.

Part 2 (--kills N). A small search (6 trials, 3 epochs, 12,000 images) whose driver
(`lenet sweep FILE`, or with --ray on a cluster) is killed with SIGKILL N times, each at a
random moment (0-4 s, --seed) after that driver's first newly recorded epoch, so mostly
inside a trial; then run until it finishes. Counted: trials ended (completed or stopped
early), ended exactly once (one of results.json / stopped.json, every epoch's row once),
trials resumed from a checkpoint, finished trials redone (their results.json rewritten),
trials lost. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from faults import small_dataset  # the first images of Fashion-MNIST as an IDX directory

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "sweeps" / "best-under-100k.toml"
LIMIT = 100_000


def toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def toml_table(table: dict) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in table.items())


def base_table(args: argparse.Namespace, data: str) -> dict:
    base = dict(tomllib.loads(GRID.read_text())["base"])
    # one thread a run either way: the grid's pool workers take one, and a search's trials
    # (one at a time here) must not measure torch's threads against a loaded machine
    base.update(dataset=data, val_split=args.val_split, threads=1)
    if args.epochs:
        base["epochs"] = args.epochs
    return base


def grid_file(args: argparse.Namespace, work: Path, data: str) -> Path:
    runs = tomllib.loads(GRID.read_text())["runs"]
    text = f'name = "grid"\nout_dir = "{work}"\n[base]\n' + toml_table(base_table(args, data))
    for run in runs:
        for lr in args.grid_lr:
            for dropout in args.grid_dropout:
                entry = {**run, "name": f"{run['name']}-lr{lr}-do{dropout}", "lr": lr,
                         "set.dropout": dropout}
                text += "[[runs]]\n" + toml_table(entry)
    path = work / "grid.toml"
    path.write_text(text)
    return path


def search_file(args: argparse.Namespace, work: Path, data: str, name: str,
                budget: int) -> Path:
    runs = tomllib.loads(GRID.read_text())["runs"]
    base = base_table(args, data)
    for key in ("lr", "weight_decay"):
        base.pop(key)
    bundle = "".join("[[space.arch.bundle]]\n" + toml_table(
        {k: v for k, v in r.items() if k != "set.dropout"}) for r in runs)
    low, high = min(args.grid_lr) / 2, max(args.grid_lr) * 2
    text = (f'name = "{name}"\nout_dir = "{work}"\n[base]\n' + toml_table(base)
            + f'[search]\nalgorithm = "tpe"\ntrials = {args.trials}\nseed = {args.seed}\n'
            f"grace_period = {args.grace}\nreduction_factor = 3\n"
            + (f"budget = {budget}\n" if budget else "") + "[space]\n"
            f"lr = {{ log-uniform = [{low}, {high}] }}\n"
            f'"set.dropout" = {{ uniform = [0.0, 0.3] }}\n'
            f"weight_decay = {{ log-uniform = [0.0001, 0.001] }}\n" + bundle)
    path = work / f"{name}.toml"
    path.write_text(text)
    return path


def largest_model(path: Path) -> int:
    """The most parameters any configuration of the search space can have."""
    import itertools

    from lenet.models.network import LeNet
    from lenet.sweeps.space import load_search

    search = load_search(path)
    choices = [p for p in search.params if p.kind in ("choice", "bundle")]
    most = 0
    for combo in itertools.product(*([b["name"] for b in p.bounds] if p.kind == "bundle"
                                     else p.bounds for p in choices)):
        config = search.config("size", {p.key: v for p, v in zip(choices, combo, strict=True)})
        model = LeNet(config.model_config(num_classes=10, image_size=(28, 28)))
        most = max(most, sum(t.numel() for t in model.parameters()))
    return most


def outcome(name: str, summaries: list, seconds: float) -> dict:
    from lenet.run.record import Run

    best = max(summaries, key=lambda s: s.accuracy)  # final validation accuracy
    test = Run.open(best.path).evaluate("test").accuracy
    return {"method": name, "trials": len(summaries), "stopped": sum(bool(s.stopped)
                                                                      for s in summaries),
            "trial_epochs": sum(s.epochs for s in summaries), "wall_s": seconds,
            "best": best.name, "val_acc": best.accuracy, "test_acc": test,
            "most_parameters": max(s.parameters for s in summaries)}


def compare(args: argparse.Namespace, work: Path) -> bool:
    from lenet.sweeps.sweep import run_sweep

    data = str(small_dataset(work / "data", args.train, args.test)) if args.train \
        else "fashion-mnist"
    grid = grid_file(args, work, data)
    runs = len(tomllib.loads(grid.read_text())["runs"])
    # the target as the search's budget: a third of the grid's trial-epochs
    budget = runs * base_table(args, data)["epochs"] // 3 if args.budget is None \
        else args.budget
    name = f"search-budget{budget}" if budget else "search"
    search = search_file(args, work, data, name, budget)
    assert largest_model(search) < LIMIT, "a configuration of the space has 100k parameters"
    quiet = (lambda line: None) if not args.verbose else print
    rows = []
    for method, path, options in (("grid", grid, {"workers": args.workers}),
                                  (name, search, {"ray": args.ray})):
        saved = work / f"{method}.row.json"  # ended before (--work): not run again
        if saved.exists():
            rows.append(json.loads(saved.read_text()))
            print(f"{method}: as measured before, from {saved}")
            continue
        start = time.perf_counter()
        summaries = run_sweep(path, say=quiet, **options)
        rows.append(outcome(method, summaries, time.perf_counter() - start))
        saved.write_text(json.dumps(rows[-1], indent=2))
    print(f"{'method':18} {'trials':>6} {'stopped':>7} {'trial-epochs':>12} {'wall s':>8} "
          f"{'best val':>8} {'its test':>8}  best run (parameters < {LIMIT:,}: "
          f"{all(r['most_parameters'] < LIMIT for r in rows)})")
    for r in rows:
        print(f"{r['method']:18} {r['trials']:6d} {r['stopped']:7d} {r['trial_epochs']:12d} "
              f"{r['wall_s']:8.0f} {r['val_acc']:8.4f} {r['test_acc']:8.4f}  {r['best']}")
    grid_row, search_row = rows
    gap = grid_row["test_acc"] - search_row["test_acc"]
    share = search_row["trial_epochs"] / grid_row["trial_epochs"]
    ok_gap, ok_share = gap <= 0.002, share <= 1 / 3
    print(f"test accuracy: search {'+' if gap <= 0 else '-'}{abs(gap):.4f} against the grid "
          f"(target within 0.002: {'met' if ok_gap else 'MISSED'}); trial-epochs: "
          f"{share:.2f} of the grid's (target <= 0.33: {'met' if ok_share else 'MISSED'})")
    (work / "search-benchmark.json").write_text(json.dumps(rows, indent=2))
    return ok_gap and ok_share


# --- part 2: the driver killed --------------------------------------------------------------

def ended(out: Path) -> dict[str, str]:
    """Each trial run -> "completed", "stopped", "both", "neither" or "rows twice"."""
    from lenet.run.directory import read_metrics

    states = {}
    for run in sorted(out.glob("trial-*")):
        done, stopped = (run / "results.json").exists(), (run / "stopped.json").exists()
        rows = [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] \
            if (run / "metrics.csv").exists() else []
        state = {(True, False): "completed", (False, True): "stopped",
                 (True, True): "both", (False, False): "neither"}[done, stopped]
        states[run.name] = state if rows == list(range(1, len(rows) + 1)) else "rows twice"
    return states


def epoch_rows(out: Path) -> int:
    total = 0
    for file in out.glob("trial-*/metrics.csv"):
        with contextlib.suppress(OSError):  # replaced at that moment
            total += len(file.read_text().splitlines())
    return total


def retries(out: Path) -> tuple[int, int]:
    """(attempts that resumed from a checkpoint, retries that started from scratch)."""
    resumed = over = 0
    for record in out.glob("trial-*/search.json"):
        epochs = [a["resumed_from_epoch"] for a in json.loads(record.read_text())["attempts"]]
        resumed += sum(e > 0 for e in epochs)
        over += sum(e == 0 for e in epochs[1:])
    return resumed, over


def killed(args: argparse.Namespace, work: Path) -> bool:
    trials = 6
    data = small_dataset(work / "data-kills", 12_000, 500)  # epochs of seconds, to land in
    spec = work / "kills.toml"
    spec.write_text(f'name = "kills"\nout_dir = "{work}"\n[base]\ndataset = "{data}"\n'
                    "epochs = 3\nbatch_size = 16\nmomentum = 0.9\nval_split = 0.2\n"
                    '"set.activation" = "relu"\n"set.pool" = "max"\n'
                    f'[search]\nalgorithm = "tpe"\ntrials = {trials}\nseed = {args.seed}\n'
                    "grace_period = 1\nreduction_factor = 2\n[space]\n"
                    "lr = { log-uniform = [0.001, 0.3] }\n"
                    '"set.dropout" = { uniform = [0.0, 0.3] }\n[resources]\ncpus = 1\n')
    out = work / "kills"
    command = [sys.executable, "-m", "lenet", "sweep", str(spec)] + \
        (["--ray", args.ray] if args.ray else [])
    env = {**os.environ, "LENET_NATIVE": "1", "RAY_AUTH_MODE": "disabled"}
    rng = random.Random(args.seed)
    finished: dict[Path, int] = {}  # results.json -> its mtime when first seen
    redone = kills = 0
    while True:
        driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        if kills < args.kills:  # a random moment after this driver's first new epoch
            rows, deadline = epoch_rows(out), time.monotonic() + 300
            while driver.poll() is None and epoch_rows(out) == rows \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            try:
                driver.wait(timeout=rng.uniform(0.0, 4.0))
            except subprocess.TimeoutExpired:
                os.killpg(driver.pid, signal.SIGKILL)
                kills += 1
        rc = driver.wait()
        for file in out.glob("trial-*/results.json"):
            mtime = file.stat().st_mtime_ns
            redone += finished.setdefault(file, mtime) != mtime
        states = ended(out)
        print(f"{'kill ' + str(kills) if rc < 0 else 'finished'}: "
              f"{sum(s in ('completed', 'stopped') for s in states.values())} trial(s) ended")
        if rc == 0:
            break
        if rc > 0:
            print(f"the driver failed (exit {rc})")
            return False
    resumed, over = retries(out)
    once = sum(s in ("completed", "stopped") for s in states.values())
    lost = trials - once
    print(f"{kills} kills: {len(states)} trials, {once} ended exactly once; {resumed} attempts "
          f"resumed a checkpoint, {over} started over (killed before the trial's first "
          f"checkpoint); {redone} finished trials redone, {lost} lost or bad")
    return len(states) == trials and once == trials and redone == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=0,
                        help="first N training images only [all 60,000]")
    parser.add_argument("--test", type=int, default=10_000, help="with --train: test images")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per run [the file's: 20]")
    parser.add_argument("--trials", type=int, default=16, help="search trials [16]")
    parser.add_argument("--grace", type=int, default=2, help="ASHA's grace period [2]")
    parser.add_argument("--budget", type=int, default=None,
                        help="the search's budget in trial-epochs, all trials together "
                             "(0: none) [a third of the grid's: the target]")
    parser.add_argument("--grid-lr", type=lambda s: [float(v) for v in s.split(",")],
                        default=[0.05, 0.1, 0.2], help="the grid's learning rates")
    parser.add_argument("--grid-dropout", type=lambda s: [float(v) for v in s.split(",")],
                        default=[0.1, 0.2], help="the grid's dropouts")
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=None, help="the grid's worker processes")
    parser.add_argument("--ray", default=None, help="run the search on this Ray cluster")
    parser.add_argument("--kills", type=int, default=0, help="part 2 only: kill the driver N "
                        "times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        ok = killed(args, work) if args.kills else compare(args, work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
