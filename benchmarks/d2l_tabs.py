"""The chapter's JAX and TensorFlow cells on `lenet.d2l` vs the real d2l 1.0.3 package.

The code is tests/book/lenet_jax.py and lenet_tensorflow.py (the chapter as a
reader types it) with `max_epochs=3`; for the book, the import line is the
book's own. The book's side runs in its own virtual environment with the
versions the book pins (jax 0.4.13, flax 0.7.0, tensorflow 2.12, numpy 1.23.5),
made by `--setup` (never inside the repository), with HOME pointed at a
directory whose Keras cache holds the Fashion-MNIST files lenet finds, so
`load_data()` does not download. Each run is a fresh process, timed from start
to exit (whole-script wall time: imports, data, compiling, training, plots);
the contenders alternate within each round.

    python benchmarks/d2l_tabs.py --setup             # once: the book's environment
    python benchmarks/d2l_tabs.py [--rounds 2] [--epochs 3] [--tabs jax,tensorflow]
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOK = HERE.parent / "tests" / "book"
TABS = {"jax": ("lenet_jax.py", "from lenet.d2l import jax as d2l", "from d2l import jax as d2l"),
        "tensorflow": ("lenet_tensorflow.py", "from lenet.d2l import tensorflow as d2l",
                       "from d2l import tensorflow as d2l")}
DEFAULT_VENV = Path(tempfile.gettempdir()) / "lenet-d2l-book-venv"
# The book's versions (d2l 1.0.3's install page), and what their era needs to resolve:
# tensorflow-metadata after 1.13 needs a newer protobuf than tensorflow 2.12 allows.
BOOK_PINS = ["numpy==1.23.5", "jax==0.4.13", "jaxlib==0.4.13", "flax==0.7.0", "optax==0.1.7",
             "tensorflow-cpu==2.12.0", "tensorflow-datasets==4.9.2",
             "tensorflow-metadata==1.13.1", "matplotlib==3.7.2", "matplotlib-inline==0.1.6",
             "requests==2.31.0", "pandas==2.0.3", "scipy==1.10.1", "ipython==8.14.0"]
KERAS_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def setup(venv: Path) -> None:
    """Make the book's environment: its pinned versions, then d2l 1.0.3 itself (--no-deps:
    its own pins ask for jupyter, which a script does not need)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *BOOK_PINS], check=True)
    subprocess.run([*pip, "--no-deps", "d2l==1.0.3"], check=True)


def keras_home(directory: Path) -> Path:
    """A HOME whose ~/.keras/datasets/fashion-mnist/ holds lenet's verified files, gzipped
    as Keras names them, so the book's load_data() finds them and downloads nothing."""
    from lenet.data import sources

    source = sources.load("fashion-mnist", download=False).source
    target = directory / ".keras" / "datasets" / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in KERAS_FILES:
        gz, raw = source / f"{name}.gz", source / name
        if gz.exists():
            os.symlink(gz, target / f"{name}.gz")
        else:
            with open(raw, "rb") as f, gzip.open(target / f"{name}.gz", "wb") as out:
                shutil.copyfileobj(f, out)
    return directory


def script(tab: str, which: str, epochs: int, directory: Path) -> Path:
    file, ours, books = TABS[tab]
    code = (BOOK / file).read_text().replace("max_epochs=10", f"max_epochs={epochs}")
    if which == "book":
        code = code.replace(ours, books)
    path = directory / f"{tab}-{which}.py"
    path.write_text(code)
    return path


def run_once(python: str, path: Path, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run: CPU time is less sensitive to other jobs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([python, str(path)], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=3600)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{path.name} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def versions(python: str, env: dict[str, str], modules: str) -> str:
    probe = (f"import importlib.metadata as m\nfor n in {modules.split()!r}:\n"
             "    print(n, m.version(n), end='  ')")
    return subprocess.run([python, "-c", probe], env=env, capture_output=True,
                          text=True).stdout.strip()


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.startswith("Model name")]
    return names[0] if names else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help=f"the book's environment [{DEFAULT_VENV}]")
    parser.add_argument("--setup", action="store_true", help="make --venv first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tabs", default="jax,tensorflow")
    parser.add_argument("--cold-cache", action="store_true",
                        help="each lenet run with an empty LENET_CACHE_DIR: the JAX tab "
                             "compiles everything, as on a first run (default: the cache "
                             "of earlier runs, as a reader's second run finds it)")
    args = parser.parse_args()
    if args.setup:
        setup(args.venv)
    book_python = str(args.venv / "bin" / "python")
    if not Path(book_python).exists():
        raise SystemExit(f"no book environment at {args.venv}: run with --setup first")
    work = Path(tempfile.mkdtemp(prefix="d2l-tabs-"))
    quiet = {"MPLBACKEND": "agg", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    env = {"lenet": {**os.environ, **quiet},
           "book": {**os.environ, **quiet, "HOME": str(keras_home(work / "home"))}}
    python = {"lenet": sys.executable, "book": book_python}
    cache = "cold (empty)" if args.cold_cache else "as earlier runs left it"
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.epochs} epochs, "
          f"{args.rounds} rounds, whole-script wall time (s); lenet's compile cache {cache}")
    print("lenet:", versions(sys.executable, env["lenet"], "jax flax optax tensorflow-cpu keras"))
    print("book: ", versions(book_python, env["book"],
                             "d2l jax flax optax tensorflow-cpu keras numpy"))
    for tab in args.tabs.split(","):
        times: dict[str, list[float]] = {"lenet": [], "book": []}
        cpu_times: dict[str, list[float]] = {"lenet": [], "book": []}
        for r in range(args.rounds):
            order = ("book", "lenet") if r % 2 else ("lenet", "book")  # alternate who goes first
            for which in order:
                run_dir = work / f"{tab}-{which}-{r}"
                run_dir.mkdir()
                path = script(tab, which, args.epochs, run_dir)
                run_env = dict(env[which])
                if which == "lenet" and args.cold_cache:
                    run_env["LENET_CACHE_DIR"] = str(run_dir / "cache")
                wall, cpu = run_once(python[which], path, run_env, run_dir)
                times[which].append(wall)
                cpu_times[which].append(cpu)
                print(f"  {tab} round {r + 1} {which}: {wall:.1f} s ({cpu:.1f} CPU s)",
                      flush=True)
        book, ours = statistics.median(times["book"]), statistics.median(times["lenet"])
        ratios = sorted(b / o for b, o in zip(times["book"], times["lenet"], strict=True))
        cpu_book, cpu_ours = (statistics.median(cpu_times[w]) for w in ("book", "lenet"))
        print(f"{tab}: book d2l 1.0.3 {book:.1f} s, lenet.d2l {ours:.1f} s (medians): "
              f"lenet {book / ours:.2f}x faster (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x; "
              f"CPU time {cpu_book:.1f} vs {cpu_ours:.1f} s: {cpu_book / cpu_ours:.2f}x)")


if __name__ == "__main__":
    main()
