"""Records, stated like records: a recipe's accuracy and time over many seeds.

    python benchmarks/records.py speed-90              # one record, its own number of seeds
    python benchmarks/records.py                       # every record (about an hour on 2 cores)
    python benchmarks/records.py speed-92 --seeds 3    # fewer seeds: a try, not a record
    python benchmarks/records.py --from records.json --markdown --plot frontier.png

Each seed is one `lenet train --recipe NAME --seed S` in a fresh process, as a user runs it.
From the run's results.json:
- accuracy: the last epoch's test accuracy (test-time augmentation included where the recipe
  has it), never the best epoch's; the recipes were tuned on a validation slice of the
  training split (their sweep files under sweeps/), never on the test split;
- clock: from the training data in memory to the last test evaluation (building the model,
  the kernel guard, every epoch and evaluation, the checkpoints between them);
- data: reading the data into memory; command: the whole process, Python's start-up and the
  run's closing work (curves, OOD detectors) included.
Printed per record: mean +- std (sample), min, max, the share of seeds reaching the target,
the median clock, the per-seed list, the CPU model and the threads. n >= 10 for records under
a minute, n >= 5 above (RECORDS). Each seed's result is saved to --json as soon as it ends;
running the same command again skips the seeds already there.

Time only on an otherwise idle machine: the clock is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    target: float  # mean test accuracy to reach
    seconds: float | None  # within this clock (median), or None: no time limit
    seeds: int  # n: >= 10 under a minute, >= 5 above
    max_parameters: int | None = None
    what: str = ""


RECORDS: dict[str, Record] = {
    "speed-90": Record(0.90, 3, 10, what="0.90 in the least time"),
    "speed-92": Record(0.92, 30, 10, what="0.92 in the least time"),
    "speed-93": Record(0.93, 120, 5, what="0.93 in the least time"),
    "classic-best": Record(0.885, None, 10, 61_706,
                           "the exact LeNet-5 (sigmoid, average pooling), 10 epochs"),
    "best-62k": Record(0.925, None, 5, 62_000, "the best with <= 62,000 parameters"),
    "best-100k": Record(0.935, 1800, 5, 100_000, "the best with <= 100,000 parameters"),
}


def cpu_description() -> str:
    from lenet.run.directory import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def run_seed(recipe: str, seed: int, out_dir: Path, extra: list[str]) -> dict:
    """Train one seed in a fresh process; its figures from the run's files."""
    name = f"{recipe}-seed{seed}"
    if (out_dir / name).exists():  # left by a benchmark killed mid-seed: its clock is lost
        print(f"  {name}: an unfinished run from an earlier attempt, trained again", flush=True)
        shutil.rmtree(out_dir / name)
    command = [sys.executable, "-m", "lenet", "train", "--recipe", recipe, "--seed", str(seed),
               "--out-dir", str(out_dir), "--name", name, "--no-progress", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    command_seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    run = out_dir / name
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    final = results.get("final", results)
    accuracy = final["test_acc"]
    return {"recipe": recipe, "seed": seed, "test_acc": accuracy,
            "epochs": final["epoch"], "clock_seconds": final["clock_seconds"],
            "data_seconds": final["data_seconds"], "command_seconds": command_seconds,
            "parameters": config["parameters"], "cpu": config["environment"]["cpu"],
            "threads": config["environment"].get("torch_threads"),
            "path": config.get("native", {}).get("path"), "extra": extra}


def summarise(recipe: str, rows: list[dict]) -> dict:
    record = RECORDS.get(recipe)
    accs = [r["test_acc"] for r in rows]
    clocks = [r["clock_seconds"] for r in rows]
    target = record.target if record else None
    summary = {
        "recipe": recipe, "n": len(rows), "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min": min(accs), "max": max(accs),
        "reached": sum(a >= target for a in accs) / len(accs) if target else None,
        "median_clock": statistics.median(clocks),
        "median_data": statistics.median(r["data_seconds"] for r in rows),
        "median_command": statistics.median(r["command_seconds"] for r in rows),
        "parameters": rows[0]["parameters"], "epochs": rows[0]["epochs"],
        "cpu": rows[0]["cpu"], "threads": rows[0]["threads"],
        "per_seed": [round(a, 4) for a in accs], "target": target,
        "target_seconds": record.seconds if record else None,
        "enough_seeds": record is None or len(rows) >= record.seeds,
    }
    met = (target is not None and summary["mean"] >= target
           and (record.seconds is None or summary["median_clock"] <= record.seconds)
           and (record.max_parameters is None or summary["parameters"] <= record.max_parameters)
           and summary["enough_seeds"])
    summary["met"] = met
    return summary


def describe(s: dict) -> str:
    target = (f"target {s['target']:.3f}"
              + (f" within {s['target_seconds']:g} s" if s["target_seconds"] else "")
              if s["target"] else "no target")
    return "\n".join([
        f"{s['recipe']}: test acc {s['mean']:.4f} +- {s['std']:.4f} (n={s['n']}, "
        f"min {s['min']:.4f}, max {s['max']:.4f}), "
        + (f"{s['reached']:.0%} of seeds reach {s['target']:.3f}; " if s["target"] else "")
        + f"median clock {s['median_clock']:.1f} s (data {s['median_data']:.1f} s, "
        f"command {s['median_command']:.1f} s); {s['parameters']:,} parameters, "
        f"{s['epochs']} epochs",
        f"  per seed: {' '.join(f'{a:.4f}' for a in s['per_seed'])}",
        f"  {target}: {'MET' if s['met'] else 'not met'}"
        + ("" if s["enough_seeds"] else " (too few seeds for a record)"),
        f"  CPU: {s['cpu']}, {threads(s)}"])


def threads(s: dict) -> str:
    return f"{s['threads']} thread{'' if s['threads'] == 1 else 's'}"


def markdown(summaries: list[dict]) -> str:
    lines = ["| record | target | recipe | parameters | test accuracy: mean +- std (min) | n | "
             "median clock | met | CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        record = RECORDS.get(s["recipe"])
        target = (f">= {s['target']:.3f}" + (f" in <= {s['target_seconds']:g} s"
                                              if s["target_seconds"] else "")
                  if s["target"] else "")
        lines.append(f"| {record.what if record else ''} | {target} | `{s['recipe']}` | "
                     f"{s['parameters']:,} | {s['mean']:.4f} +- {s['std']:.4f} "
                     f"({s['min']:.4f}) | {s['n']} | {s['median_clock']:.1f} s | "
                     f"{'yes' if s['met'] else 'no'} | {s['cpu']}, {threads(s)} |")
    return "\n".join(lines)


def plot(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for s in summaries:
        ax.errorbar(s["median_clock"], s["mean"], yerr=s["std"], fmt="o", capsize=3)
        ax.annotate(s["recipe"], (s["median_clock"], s["mean"]), textcoords="offset points",
                    xytext=(5, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median clock, seconds (data in memory -> last test evaluation)")
    ax.set_ylabel("test accuracy (mean +- std over seeds)")
    cpus = sorted({s["cpu"] for s in summaries})
    ax.set_title(f"lenet records on Fashion-MNIST ({'; '.join(cpus)})", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_rows(path: Path, rows: list[dict]) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(rows, indent=1))
    temporary.replace(path)  # a benchmark killed mid-write keeps the seeds it had


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", help=f"records to run [{' '.join(RECORDS)}]")
    parser.add_argument("--seeds", type=int, help="seeds per record [the record's n]")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("records.json"),
                        help="per-seed results, kept between runs [records.json]")
    parser.add_argument("--from", dest="source", type=Path,
                        help="only summarise this JSON file (no training)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--plot", type=Path, help="draw accuracy against clock to this PNG")
    parser.add_argument("--out-dir", type=Path, help="keep the runs here [a temporary folder]")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to every `lenet train` (a try, e.g. "
                             "--train-arg=--epochs=3); the summary counts only the seeds "
                             "run with the same ARGs")
    args = parser.parse_args()
    unknown = [r for r in args.recipes if r not in RECORDS]
    if unknown and not args.seeds:
        parser.error(f"{', '.join(unknown)}: not a record; give --seeds to run it anyway")
    recipes = args.recipes or list(RECORDS)
    rows = load_rows(args.source or args.json)
    if args.source is None:
        print(f"CPU: {cpu_description()}", flush=True)
        out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="lenet-records-"))
        for recipe in recipes:
            n = args.seeds or RECORDS[recipe].seeds
            for seed in range(args.first_seed, args.first_seed + n):
                if any(r["recipe"] == recipe and r["seed"] == seed
                       and r.get("extra", []) == args.train_arg for r in rows):
                    continue  # done by an earlier run of this command
                row = run_seed(recipe, seed, out_dir, args.train_arg)
                rows.append(row)
                save_rows(args.json, rows)
                print(f"  {recipe} seed {seed}: test acc {row['test_acc']:.4f}, clock "
                      f"{row['clock_seconds']:.1f} s, command {row['command_seconds']:.1f} s",
                      flush=True)
    summaries = []
    for recipe in recipes if args.recipes or args.source is None else dict.fromkeys(
            r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe and r.get("extra", []) == args.train_arg]
        if mine:
            summaries.append(summarise(recipe, mine))
            print(describe(summaries[-1]), flush=True)
    if args.markdown:
        print(markdown(summaries))
    if args.plot:
        plot(summaries, args.plot)
        print(f"plot: {args.plot}")
    return 0 if all(s["met"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
