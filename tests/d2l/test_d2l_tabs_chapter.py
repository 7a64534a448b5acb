"""The chapter's JAX and TensorFlow cells, typed from the book with only the import changed,
on the real Fashion-MNIST (fails, never skips, when the data is missing): on a slice of it,
and for the book's 10 epochs to the book's accuracy."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

pytestmark = [pytest.mark.data, pytest.mark.slow]
BOOK = Path(__file__).parents[1] / "book"

# What the harness adds around the book's code, which stays untouched: a seed before the
# trainer, an optional slice of the data after it is made, the reader's accuracy at the end.
TABS = {
    "jax": {
        "file": "lenet_jax.py", "frameworks": ("jax", "flax", "optax"),
        "seed": "import random; random.seed(0)\n",
        "accuracy": ("\nhits = [model.accuracy(trainer.state.params, batch[:-1], batch[-1],\n"
                     "                       trainer.state, averaged=False)\n"
                     "        for batch in data.val_dataloader()]\n"
                     "print('val acc', float(jnp.concatenate(hits).mean()))\n"),
        "shapes": ["Conv output shape:\t (1, 28, 28, 6)", "function output shape:\t (1, 14, 14, 6)",
                   "function output shape:\t (1, 400)", "Dense output shape:\t (1, 10)"],
    },
    "tensorflow": {
        "file": "lenet_tensorflow.py", "frameworks": ("tensorflow",),
        "seed": "tf.keras.utils.set_random_seed(0)\n",
        "accuracy": ("\nhits = [model.accuracy(model(X), y, averaged=False)\n"
                     "        for X, y in data.val_dataloader()]\n"
                     "print('val acc', float(tf.reduce_mean(tf.concat(hits, 0))))\n"),
        "shapes": ["Conv2D output shape:\t (1, 28, 28, 6)",
                   "AveragePooling2D output shape:\t (1, 14, 14, 6)",
                   "Flatten output shape:\t (1, 400)", "Dense output shape:\t (1, 10)"],
    },
}
SLICE = ("data.train = tuple(a[:{n}] for a in data.train)\n"
         "data.val = tuple(a[:{m}] for a in data.val)\n")


def chapter(tab: str, epochs: int, sliced: tuple[int, int] | None = None) -> str:
    spec = TABS[tab]
    for name in spec["frameworks"]:
        require(name)
    code = (BOOK / spec["file"]).read_text()
    assert code.count("max_epochs=10") == 1 and code.count("\ntrainer = ") == 1
    code = code.replace("max_epochs=10", f"max_epochs={epochs}")
    code = code.replace("\ntrainer = ", "\n" + spec["seed"] + "trainer = ")
    if sliced:
        line = "data = d2l.FashionMNIST(batch_size=128)\n"
        code = code.replace(line, line + SLICE.format(n=sliced[0], m=sliced[1]))
    return code + spec["accuracy"]


def run_chapter(code: str, tmp_path: Path) -> tuple[list[str], float]:
    script = tmp_path / "chapter.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    match = re.fullmatch(r"val acc (\d\.\d+)", lines[-1])
    assert match, result.stdout
    return lines, float(match.group(1))


@pytest.mark.parametrize("tab", sorted(TABS))
def test_the_cells_as_printed_on_a_slice(tab, tmp_path):
    lines, accuracy = run_chapter(chapter(tab, epochs=1, sliced=(2048, 512)), tmp_path)
    for shape in TABS[tab]["shapes"]:
        assert shape in lines
    plots = list((tmp_path / "d2l-plots").glob("*.png"))
    assert len(plots) == 1 and f"plot: {plots[0]}" in lines
    assert 0.0 <= accuracy <= 1.0 and round(accuracy * 512) == pytest.approx(accuracy * 512)


# The book prints 0.736 validation accuracy after 10 epochs (JAX tab). With seed 0 lenet
# measured 0.7309 (JAX) and 0.7365 (TensorFlow) on 2 cores; a few points lower still passes
# (another seed, another CPU's rounding), a run stuck near chance (0.1) fails.
BOOK_LEVEL = 0.70


@pytest.mark.parametrize("tab", sorted(TABS))
def test_ten_epochs_reach_the_books_accuracy(tab, tmp_path):
    lines, accuracy = run_chapter(chapter(tab, epochs=10), tmp_path)
    assert TABS[tab]["shapes"][0] in lines
    assert accuracy >= BOOK_LEVEL, f"{tab}: validation accuracy {accuracy:.4f} after 10 epochs"
