"""The chapter in a real Jupyter kernel (ipykernel + nbclient): its training plots reach
the notebook as one image per cell, updated in place, with the curves the book plots.

The book's cells (tests/book/, split at `# %%`) run unchanged on a slice of the real
Fashion-MNIST; a first cell, the harness's, seeds torch and cuts the data to a slice.
"""

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import require

pytestmark = [pytest.mark.data, pytest.mark.slow]
BOOK = Path(__file__).parents[1] / "book"

HARNESS = """\
import dataclasses
import lenet.data.sources as sources
{seed}
_load = sources.load

def _slice(*args, **kwargs):  # the first TRAIN / TEST images of the real data
    data = _load(*args, **kwargs)
    cut = lambda split, n: dataclasses.replace(split, images=split.images[:n],
                                               labels=split.labels[:n])
    return dataclasses.replace(data, train=cut(data.train, {train}), test=cut(data.test, {test}))

sources.load = _slice
"""


@dataclasses.dataclass
class Executed:
    cells: list  # the notebook's cells, outputs as the front end keeps them
    messages: dict[int, list[str]]  # cell index -> the output messages' types, in order


def book_cells(name: str, edits: dict[str, str]) -> list[str]:
    code = (BOOK / name).read_text()
    for old, new in edits.items():
        assert old in code, old
        code = code.replace(old, new)
    cells = [c.strip() for c in code.split("# %%\n")[1:]]
    return [c for c in cells if c]


def execute(cells: list[str], tmp_path: Path, train: int = 6000, test: int = 1000,
            seed: str = "import torch; torch.manual_seed(0)") -> Executed:
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    notebook = nbformat.v4.new_notebook()
    source = [HARNESS.format(train=train, test=test, seed=seed), *cells]
    notebook.cells = [nbformat.v4.new_code_cell(s) for s in source]
    messages: dict[int, list[str]] = {}

    class Client(nbclient.NotebookClient):
        def process_message(self, msg, cell, cell_index):
            if msg["msg_type"] in ("display_data", "update_display_data", "stream",
                                   "execute_result", "clear_output"):
                messages.setdefault(cell_index - 1, []).append(msg["msg_type"])
            return super().process_message(msg, cell, cell_index)

    # "python3" is ipykernel's own spec: jupyter_client starts it with this interpreter.
    client = Client(notebook, timeout=600, kernel_name="python3",
                    resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return Executed(notebook.cells[1:], messages)


def images(cell) -> list[str]:
    """The SVG or PNG images among a cell's outputs."""
    found = []
    for output in cell.outputs:
        data = output.get("data", {})
        for mime in ("image/svg+xml", "image/png"):
            if mime in data:
                found.append(data[mime])
    return found


def text_of(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def assert_one_live_plot(notebook: Executed, index: int, curves: list[str]) -> str:
    """The cell shows one image, first displayed and then updated in place, of these curves."""
    cell = notebook.cells[index]
    shown = images(cell)
    assert len(shown) == 1, [o.get("output_type") for o in cell.outputs]
    assert shown[0].lstrip().startswith(("<?xml", "<svg")), shown[0][:80]
    sent = notebook.messages.get(index, [])
    assert sent.count("display_data") == 1 and "update_display_data" in sent, sent
    assert "clear_output" not in sent, sent
    text = text_of(cell)
    assert "<Figure" not in text, text  # no figure repr as text, ever
    for curve in curves:
        assert f"<!-- {curve} -->" in shown[0], curve  # matplotlib keeps text as a comment
        assert re.search(rf"{curve} \d\.\d{{3}}", text), (curve, text)  # its last value
    return text


def test_current_edition_in_a_kernel(tmp_path):
    cells = book_cells("lenet_current_edition.py", {"max_epochs=10": "max_epochs=2"})
    check = ("hits = [model.accuracy(model(X), y, averaged=False)\n"
             "        for X, y in data.val_dataloader()]\n"
             "print('val acc', float(torch.cat(hits).mean()))")
    notebook = execute([*cells, check], tmp_path)
    summary = text_of(notebook.cells[2])
    assert "Conv2d output shape:\t torch.Size([1, 6, 28, 28])" in summary
    training = len(cells) - 1
    text = assert_one_live_plot(notebook, training, ["train_loss", "val_loss", "val_acc"])
    # The plot's last point is the trained model's (a mean over batches, the last one short).
    plotted = float(re.search(r"val_acc (\d\.\d{3})", text).group(1))
    measured = float(text_of(notebook.cells[-1]).split()[-1])
    assert abs(plotted - measured) < 0.02, (plotted, measured)
    for index in range(training):  # cells that do not plot show no image
        assert not images(notebook.cells[index]), index


def test_previous_edition_in_a_kernel(tmp_path):
    cells = book_cells("lenet_previous_edition.py",
                       {"lr, num_epochs = 0.9, 10": "lr, num_epochs = 0.9, 2"})
    notebook = execute(cells, tmp_path)
    training = len(cells) - 1
    text = assert_one_live_plot(notebook, training, ["train loss", "train acc", "test acc"])
    # The closing prints come after the plot and leave it in place.
    printed = re.search(r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc (\d\.\d{3})", text)
    assert printed, text
    assert f"test acc {printed.group(1)}" in text.split("]")[0], text  # the plot's last point
    assert re.search(r"examples/sec on cpu", text), text
    last = notebook.cells[training].outputs[-1]
    assert last.get("output_type") == "stream", last


@pytest.mark.parametrize("tab, seed", [
    ("jax", ""),  # the tab seeds through d2l.get_key
    ("tensorflow", "import tensorflow as tf; tf.keras.utils.set_random_seed(0)"),
])
def test_the_jax_and_tensorflow_tabs_in_a_kernel(tab, seed, tmp_path):
    require(tab)
    cells = book_cells(f"lenet_{tab}.py", {"max_epochs=10": "max_epochs=1"})
    notebook = execute(cells, tmp_path, train=3000, test=500, seed=seed)
    assert "output shape:" in text_of(notebook.cells[2])  # the layer summary
    training = len(cells) - 1
    assert_one_live_plot(notebook, training, ["train_loss", "val_loss", "val_acc"])
    for index in range(training):
        assert not images(notebook.cells[index]), index


def test_a_figure_shown_again_in_a_new_cell(tmp_path):
    """A board reused by a later cell draws there, leaving the earlier cell's image alone."""
    cells = [
        "from lenet import d2l\nboard = d2l.ProgressBoard('x')\n"
        "for x in range(5):\n    board.draw(x, x / 10, 'line')\nboard.finish()",
        "for x in range(5, 10):\n    board.draw(x, x / 10, 'line')\nboard.finish()",
        "d2l.show_images([[[0.0, 1.0], [1.0, 0.0]]] * 2, 1, 2, titles=['a', 'b']);",
    ]
    notebook = execute(cells, tmp_path, train=100, test=100)
    first, second = (text_of(notebook.cells[i]) for i in (0, 1))
    assert "line 0.400" in first and "line 0.900" in second, (first, second)
    assert [len(images(c)) for c in notebook.cells] == [1, 1, 1]
