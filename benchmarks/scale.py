"""Scaling out on one machine, in one run: data-parallel training and sweeps on Ray.

1. Training speed (examples/s over the training passes, from each run's results.json) of
   the book's recipe in 1 process x T threads vs T processes x 1 thread (`lenet train
   --nproc T`, DistributedDataParallel; gradients averaged through shared memory, and
   through gloo's all-reduce with LENET_DIST_SHM=0), alternating, `--rounds` times, at the
   book's batch of 128 and at 512; the ratios (target: >= 0.8 on 2 cores) and each
   command's wall time; and what one all-reduce costs (a fixed cost per step).
2. The wall time of one 8-run sweep (`lenet sweep`) with the process pool and with
   `--ray` (a local Ray started for the sweep), alternating; Ray's start-up alone; the
   overhead per run of Ray over the pool (target: <= 1 s), with and without start-up.

Each command runs in a fresh process, as a user would run it. Run it on an idle machine:

    python benchmarks/scale.py                 # full: Fashion-MNIST, 2 epochs; ~6 minutes
    python benchmarks/scale.py --quick         # a 6,400-image slice: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall seconds of `command`; its output shown only when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.perf_counter() - start


def data_slice(directory: Path, n_train: int) -> str:
    """The first `n_train` training images of Fashion-MNIST (and 2,000 test images)."""
    from lenet.data import idx, sources

    data = sources.load("fashion-mnist")
    for prefix, split, n in (("train", data.train, n_train), ("t10k", data.test, 2000)):
        idx.write(directory / f"{prefix}-images-idx3-ubyte", split.images[:n])
        idx.write(directory / f"{prefix}-labels-idx1-ubyte", split.labels[:n])
    return str(directory)


def training(work: Path, dataset: str, epochs: int, rounds: int, cores: int,
             batch: int) -> dict:
    """Part 1: examples/s of 1 process x `cores` threads and `cores` processes x 1."""
    common = ["train", "--dataset", dataset, "--epochs", str(epochs), "--no-progress",
              "--out-dir", str(work / "runs"), "--batch-size", str(batch)]
    contenders = {  # name: (arguments, environment)
        f"1 process x {cores} threads": (["--threads", str(cores)], {}),
        f"{cores} processes x 1 thread": (["--nproc", str(cores), "--threads", "1"], {}),
        f"{cores} x 1, gloo's all-reduce": (["--nproc", str(cores), "--threads", "1"],
                                            {"LENET_DIST_SHM": "0"}),
    }
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds + 1):  # round 0 warms up: the kernel's build and guard decisions
        for name in (names if r % 2 else names[::-1]):
            run_name = f"b{batch}-r{r}-{names.index(name)}"
            arguments, env = contenders[name]
            wall = run([str(BIN / "lenet"), *common, "--name", run_name, *arguments], work, env)
            final = json.loads((work / "runs" / run_name / "results.json").read_text())
            if r:
                speeds[name].append(final["examples_per_sec_overall"])
                walls[name].append(wall)
    figures = {name: {"examples_per_sec": statistics.median(speeds[name]),
                      "all": [round(s) for s in speeds[name]],
                      "wall_s": statistics.median(walls[name])} for name in names}
    alone = figures[names[0]]["examples_per_sec"]
    figures["ratio"] = figures[names[1]]["examples_per_sec"] / alone
    figures["ratio_gloo"] = figures[names[2]]["examples_per_sec"] / alone
    return figures


SWEEP = """name = "{name}"
out_dir = "{out}"
[base]
dataset = "{dataset}"
epochs = 1
[grid]
lr = [0.1, 0.3]
seed = [0, 1, 2, 3]
[resources]
cpus = 1
"""


def sweeps(work: Path, dataset: str, rounds: int, cores: int) -> dict:
    """Part 2: one 8-run sweep with the pool and on Ray; Ray's start-up alone."""
    walls: dict[str, list[float]] = {"pool": [], "ray": []}
    startup = []
    env = {"RAY_DISABLE_USAGE_STATS": "1"}
    for r in range(rounds):
        for backend in (("pool", "ray") if r % 2 == 0 else ("ray", "pool")):
            spec = work / f"{backend}-{r}.toml"
            spec.write_text(SWEEP.format(name=f"{backend}-{r}", out=work / "sweeps",
                                         dataset=dataset))
            extra = ["--workers", str(cores)] if backend == "pool" else ["--ray"]
            walls[backend].append(run([str(BIN / "lenet"), "sweep", str(spec), *extra], work,
                                      env))
        startup.append(run([sys.executable, "-c",
                            "import ray; ray.init(include_dashboard=False); ray.shutdown()"],
                           work, env))
    pool, ray = statistics.median(walls["pool"]), statistics.median(walls["ray"])
    start = statistics.median(startup)
    return {"pool_s": pool, "ray_s": ray, "ray_startup_s": start, "runs": 8,
            "overhead_per_run_s": (ray - pool) / 8,
            "overhead_per_run_without_startup_s": (ray - pool - start) / 8,
            "all": {k: [round(v, 1) for v in vs] for k, vs in walls.items()}}


ALLREDUCE = """
import json, sys, time, torch, torch.distributed as dist
rank, size = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=rank, world_size=size)
out = {}
for n in (1000, 61706):
    t = torch.randn(n)
    for _ in range(50):
        dist.all_reduce(t)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(300):
        dist.all_reduce(t)
    out[str(n)] = (time.perf_counter() - start) / 300 * 1e3
from lenet.native import shm_reduce
segment = shm_reduce.Segment.create(size, 61706) if rank == 0 else None
box = [str(segment.path) if segment else None]
dist.broadcast_object_list(box, src=0)
segment = segment or shm_reduce.Segment.attach(box[0], rank, size, 61706)
dist.barrier()
if rank == 0:
    segment.unlink()
t = torch.randn(61706)
for _ in range(50):
    segment.mean_(t, 60)
dist.barrier()
start = time.perf_counter()
for _ in range(300):
    segment.mean_(t, 60)
out["shm"] = (time.perf_counter() - start) / 300 * 1e3
if rank == 0:
    print(json.dumps(out))
dist.destroy_process_group()
"""


def allreduce_ms(cores: int) -> dict[str, float]:
    """Milliseconds of one gloo all-reduce among `cores` processes (each 1 thread), and of
    lenet's shared-memory mean of 61,706 floats: the fixed cost DDP adds to every step."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, "-c", ALLREDUCE, str(r), str(cores)], env=env,
                              stdout=subprocess.PIPE, text=True) for r in range(cores)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    return json.loads(outs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds [2]")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run [2]")
    parser.add_argument("--quick", action="store_true",
                        help="a 6,400-image slice, 1 round, 1 epoch: checks that it runs")
    parser.add_argument("--batch-sizes", default="128,512",
                        help="global batch sizes of part 1 [128 (the book's),512]")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    from lenet.base.device import available_cpus
    from lenet.run.directory import cpu_model

    cores = available_cpus()
    load = os.getloadavg()[0]
    print(f"CPU: {cpu_model()}, {cores} cores; load average {load:.2f} at the start"
          + ("  (NOT idle: figures unreliable)" if load > 0.5 else ""))
    with tempfile.TemporaryDirectory(prefix="lenet-scale-") as tmp:
        work = Path(tmp)
        rounds, epochs = (1, 1) if args.quick else (args.rounds, args.epochs)
        full = "fashion-mnist" if not args.quick else data_slice(work, 6400)
        (work / "slice").mkdir()
        small = data_slice(work / "slice", 6400)
        trainings = {}
        for batch in batches:
            train = trainings[batch] = training(work, full, epochs, rounds, cores, batch)
            names = [k for k in train if not k.startswith("ratio")]
            print(f"\n1. training, batch {batch}, {epochs} epoch(s) of "
                  f"{'a slice' if args.quick else 'Fashion-MNIST'}, median of {rounds} round(s):")
            for name in names:
                f = train[name]
                print(f"   {name:24s} {f['examples_per_sec']:9,.0f} examples/s  (rounds: "
                      f"{f['all']}; command {f['wall_s']:.1f} s)")
            print(f"   ratio {names[1]} / {names[0]}: {train['ratio']:.2f}  (target >= 0.8; "
                  f"with gloo's all-reduce instead of shared memory: {train['ratio_gloo']:.2f})")
        latency = allreduce_ms(cores)
        print(f"   gloo all-reduce of LeNet-5's 61,706 gradients among {cores} processes: "
              f"{latency['61706']:.2f} ms (of 1,000 floats: {latency['1000']:.2f} ms): per step, "
              f"whatever the batch;\n   lenet's shared-memory mean of the same: "
              f"{latency['shm']:.3f} ms")
        sweep = sweeps(work, small, rounds, cores)
        print(f"\n2. an 8-run sweep (1 epoch of 6,400 images each), median of {rounds}:")
        print(f"   process pool ({cores} workers) {sweep['pool_s']:6.1f} s")
        print(f"   Ray (local, started for it)  {sweep['ray_s']:6.1f} s   (Ray start-up "
              f"alone: {sweep['ray_startup_s']:.1f} s)")
        print(f"   Ray's overhead per run: {sweep['overhead_per_run_s']:+.2f} s, "
              f"{sweep['overhead_per_run_without_startup_s']:+.2f} s without the start-up "
              "(target <= 1 s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "cores": cores,
                                               "training": trainings, "allreduce_ms": latency,
                                               "sweep": sweep}, indent=2))


if __name__ == "__main__":
    main()
