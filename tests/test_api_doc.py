"""docs/how-to/python.md's examples run as written, and `import lenet` stays light."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import spec_for, write_dataset

import lenet
from lenet.data import datasets

DOC = Path(__file__).parents[1] / "docs" / "how-to" / "python.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_api_doc_examples_run(isolated_sources, monkeypatch, capsys):
    # a tiny dataset stands in for Fashion-MNIST, so the examples read as users write them
    directory = isolated_sources / "data"
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist",
                        spec_for(write_dataset(directory), name="fashion-mnist"))
    monkeypatch.setenv("LENET_DATA_DIR", str(directory))
    monkeypatch.chdir(isolated_sources)
    blocks = examples()
    assert len(blocks) >= 5
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} example {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "test accuracy" in out and "out of distribution:" in out
    assert f"{namespace['detector'].name} " in out
    assert (isolated_sources / "runs" / "api-demo" / "results.json").exists()
    assert (isolated_sources / "runs" / "with-sink" / "results.json").exists()


def test_the_public_api_is_declared_and_loads_lazily():
    for name in lenet.__all__:
        assert getattr(lenet, name) is not None, name
    assert set(dir(lenet)) >= set(lenet.__all__)
    code = "import sys, lenet; print('torch' in sys.modules, lenet.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", lenet.__version__]
