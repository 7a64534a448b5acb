"""Every code block of the README and the docs runs, or says why it does not.

A fenced block's language says what it is: `sh`/`bash` and `python` are run, `toml` sweep
and search files go through lenet's own parsers, `json` is parsed, `text` is output (not
code). A block that cannot run here (a whole `make test`, a cluster, minutes of benchmark)
is marked by the line before it, `<!-- not run: REASON -->`. A block that includes a file
(`--8<-- "tests/book/..."`) is run where that file is: by the test suite.

Each page runs in a sandbox of its own, in order, as a reader would type it:
- `lenet ...` lines in this process (conftest's way: fast), with Fashion-MNIST replaced by
  a small synthetic dataset of the same name and classes (2,300 training images: the
  recipes keep 2,000 out for the OOD thresholds), and `lenet train` capped at 2 epochs, so
  that training takes seconds;
  the runs the pages use (runs/quick, runs/modern, runs/fast) are made once beforehand,
  unless the page trains them itself;
- `lenet serve ...` starts a real server on a free port, up until the page ends;
  `localhost:8000` in later lines is that port; `curl` fails on an HTTP error;
- other lines (an environment variable set, a pipe, `curl`, `cat`) in bash.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from conftest import spec_for, write_dataset
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = {"sh", "bash", "python", "toml", "json", "text"}
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: (.*?) -->")
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)
# Pages whose Python blocks another test runs, in order, on a synthetic run.
RUN_ELSEWHERE = {"docs/how-to/python.md": "tests/test_api_doc.py"}
SHELL_SYNTAX = re.compile(r"[|;&<>$`]|^\w+=")
ENV_CLEAN = dict(os.environ)  # for subprocesses: the real data, not this test's
MAX_EPOCHS = 2  # a `lenet train` example trains at most this many epochs here


@dataclasses.dataclass
class Block:
    page: str
    line: int
    language: str
    code: str
    not_run: str | None  # the reason, where marked

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.language})"


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.fullmatch(before.strip())
        found.append(Block(str(path.relative_to(ROOT)), line, m.group(1), m.group(2),
                           marker.group(1).strip() if marker else None))
    return found


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def test_every_block_has_a_language_and_every_block_not_run_a_reason():
    found = all_blocks()
    assert len(found) > 40
    for block in found:
        assert block.language in LANGUAGES, f"{block}: give the block one of {LANGUAGES}"
        if block.not_run is not None:
            assert len(block.not_run) >= 15, f"{block}: say why it is not run"
        for included in SNIPPET.findall(block.code):
            assert included.startswith("tests/") and (ROOT / included).is_file(), block
    markers = sum(len(re.findall(r"^<!-- not run: .*-->$", p.read_text(), flags=re.M))
                  for p in PAGES)
    assert markers == sum(b.not_run is not None for b in found), "a marker not before a block"


def runnable(page: Path) -> list[Block]:
    name = str(page.relative_to(ROOT))
    return [b for b in blocks(page) if b.language != "text" and b.not_run is None
            and not SNIPPET.search(b.code)
            and not (b.language == "python" and name in RUN_ELSEWHERE)]


# --- the sandbox --------------------------------------------------------------------------

def commands(code: str) -> list[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            found.append(line.split(" #", 1)[0].strip() if "#" in line else line.strip())
    return found


def picture(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A sandbox's starting point: a synthetic Fashion-MNIST, pictures the pages name,
    and the runs they use, trained in this process on it."""
    from lenet.data import datasets

    root = tmp_path_factory.mktemp("docs-base")
    arrays = write_dataset(root / "data", n_train=2300, n_test=300)
    write_dataset(root / "path" / "to" / "dir", n_train=300, n_test=100, seed=5)
    images = arrays["t10k-images-idx3-ubyte"]
    rng = np.random.default_rng(0)
    for name, i in (("shoe.png", 0), ("shirt.png", 1), ("a.png", 2), ("b.png", 3)):
        picture(root / name, images[i])
    for name, size in (("shoe.jpg", (90, 120)), ("my_coat.jpg", (64, 48)),
                       ("photo.jpg", (240, 320))):
        picture(root / name, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    np.save(root / "images.npy", images[:8])
    real = datasets.DATASETS["fashion-mnist"]
    fake = dataclasses.replace(real, files=spec_for(arrays).files, mirrors=())
    with pytest.MonkeyPatch.context() as mp:
        patch(mp, root, fake)
        for argv in (["train", "--epochs", "2", "--val-split", "0.1", "--seed", "1",
                      "--name", "quick"],
                     ["train", "--recipe", "modern", "--epochs", "2", "--name", "modern"],
                     ["train", "--recipe", "fast", "--name", "fast"]):
            assert lenet_here(argv)[0] == 0, argv
    return root, fake


def patch(mp: pytest.MonkeyPatch, root: Path, fake) -> None:
    from lenet.data import datasets

    mp.setitem(datasets.DATASETS, "fashion-mnist", fake)
    mp.setenv("LENET_DATA_DIR", str(root / "data"))
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    mp.setenv("LENET_D2L_PLOTS", str(root / "d2l-plots"))
    mp.setattr("lenet.data.sources.DEBIAN_DATASETS", root / "no-debian")
    mp.chdir(root)


def lenet_here(argv: list[str]) -> tuple[int, str]:
    from lenet.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


class Page:
    """One page's commands, run in its sandbox."""

    def __init__(self, sandbox: Path) -> None:
        self.sandbox, self.server, self.port = sandbox, None, None
        self.namespace: dict = {}  # the page's Python blocks share one, as a session would
        self.env = {**ENV_CLEAN, "PATH": f"{Path(sys.executable).parent}:{ENV_CLEAN['PATH']}"}

    def run(self, block: Block) -> None:
        if block.language in ("sh", "bash"):
            for command in commands(block.code):
                self.shell(command, block)
        elif block.language == "python":
            with redirect_stdout(io.StringIO()):
                exec(compile(block.code, str(block), "exec"), self.namespace)
        elif block.language == "toml":
            check_toml(block, self.sandbox)
        elif block.language == "json":
            json.loads(block.code)

    def shell(self, command: str, block: Block) -> None:
        if self.port is not None:
            command = re.sub(r"(localhost|127\.0\.0\.1):8000", f"127.0.0.1:{self.port}", command)
        words = shlex.split(command)
        if words[:2] == ["lenet", "serve"]:
            self.serve(words[2:], block)
        elif words[0] == "lenet" and not SHELL_SYNTAX.search(command):
            argv = [w for arg in words[1:] for w in (sorted(glob.glob(arg)) or [arg])]
            if argv[0] == "train":
                argv = budget(argv)
            code, out = lenet_here(argv)
            assert code == 0, f"{block}: `{command}` exited {code}\n{out[-2000:]}"
        else:
            command = re.sub(r"\bcurl ", "curl --fail-with-body --max-time 60 ", command)
            done = subprocess.run(["bash", "-c", command], cwd=self.sandbox, env=self.env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (f"{block}: `{command}` exited {done.returncode}\n"
                                          f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}")

    def serve(self, args: list[str], block: Block) -> None:
        from serving import serve_load

        assert self.server is None, f"{block}: one server a page"
        self.port = serve_load.free_port()
        command = [sys.executable, "-m", "lenet", "serve", *args, "--port", str(self.port),
                   "--quiet"]
        self.server = serve_load.start_server(command, self.port, env=self.env)

    def close(self) -> str:
        if self.server is None:
            return ""
        from serving import serve_load

        return serve_load.stop_server(self.server)


def budget(argv: list[str]) -> list[str]:
    """`lenet train`'s arguments with at most MAX_EPOCHS epochs: the examples are run to
    show they work, not how well they train (that is the benchmarks' job)."""
    if "--epochs" in argv:
        i = argv.index("--epochs") + 1
        return [*argv[:i], str(min(int(argv[i]), MAX_EPOCHS)), *argv[i + 1:]]
    return [*argv, "--epochs", str(MAX_EPOCHS)]


def check_toml(block: Block, sandbox: Path) -> None:
    """A whole sweep or search file through lenet's parsers; a fragment as TOML."""
    from lenet.sweeps import space, spec

    data = tomllib.loads(block.code)
    path = sandbox / f"block-{block.line}.toml"
    path.write_text(block.code)
    if "search" in data:
        search = space.load_search(path)
        assert search.params, block
        for p in search.params:  # every bundle's options make a valid configuration
            if p.kind == "bundle":
                for bundle in p.bounds:
                    search.config("check", {p.key: bundle["name"]})
    elif "name" in data:
        _, _, planned = spec.load_spec(path)
        assert planned, block


def trained_by(page_blocks: list[Block]) -> set[str]:
    """Run names the page's own `lenet train ... --name X` lines make."""
    names = set()
    for block in page_blocks:
        if block.language in ("sh", "bash"):
            names |= set(re.findall(r"lenet train .*--name (\S+)", block.code))
    return names


PAGES_RUN = [p for p in PAGES if runnable(p)]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_RUN, ids=[str(p.relative_to(ROOT)) for p in PAGES_RUN])
def test_the_examples_of(page, base, tmp_path, monkeypatch):
    root, fake = base
    sandbox = tmp_path / "sandbox"
    shutil.copytree(root, sandbox)
    page_blocks = runnable(page)
    for name in trained_by(page_blocks):  # the page trains it: start without it
        shutil.rmtree(sandbox / "runs" / name, ignore_errors=True)
    patch(monkeypatch, sandbox, fake)
    runner = Page(sandbox)
    try:
        for block in page_blocks:
            runner.run(block)
    finally:
        log = runner.close()
    assert "Traceback" not in log, log
