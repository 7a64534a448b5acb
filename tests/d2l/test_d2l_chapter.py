"""The chapter's own code, typed from the book with only the import changed, on the
real Fashion-MNIST (fails, never skips, when the data is missing)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.data, pytest.mark.slow]
BOOK = Path(__file__).parents[1] / "book"
SEED = "import torch; torch.manual_seed(0)\n"  # the harness seeds; the book's code is untouched


def run_chapter(code: str, tmp_path) -> str:
    script = tmp_path / "chapter.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_current_edition(tmp_path):
    code = (BOOK / "lenet_current_edition.py").read_text()
    code = code.replace("max_epochs=10", "max_epochs=3")
    code = code.replace("\ntrainer =", "\n" + SEED + "trainer =")
    code += ("\nhits = [model.accuracy(model(X), y, averaged=False)\n"
             "        for X, y in data.val_dataloader()]\n"
             "print('val acc', float(torch.cat(hits).mean()))\n")
    out = run_chapter(code, tmp_path)
    lines = out.splitlines()
    assert lines[0] == "Conv2d output shape:\t torch.Size([1, 6, 28, 28])"
    assert lines[2] == "AvgPool2d output shape:\t torch.Size([1, 6, 14, 14])"
    assert lines[11] == "Linear output shape:\t torch.Size([1, 10])"
    plots = list((tmp_path / "d2l-plots").glob("*.png"))
    assert len(plots) == 1 and f"plot: {plots[0]}" in out
    assert float(lines[-1].split()[-1]) > 0.2  # above chance (0.1) after 3 epochs


@pytest.mark.parametrize("own_train_ch6", [True, False], ids=["chapter-train_ch6", "d2l-train_ch6"])
def test_previous_edition(tmp_path, own_train_ch6):
    code = (BOOK / "lenet_previous_edition.py").read_text()
    code = SEED + code.replace("lr, num_epochs = 0.9, 10", "lr, num_epochs = 0.9, 2")
    if not own_train_ch6:
        code = code.replace("\ntrain_ch6(net,", "\nd2l.train_ch6(net,")
    out = run_chapter(code, tmp_path)
    assert "Reshape output shape: \t torch.Size([1, 1, 28, 28])" in out
    assert "training on cpu" in out
    match = re.search(r"loss (\d\.\d{3}), train acc (\d\.\d{3}), test acc (\d\.\d{3})", out)
    assert match and float(match.group(3)) > 0.3, out
    assert re.search(r"\n\d+\.\d examples/sec on cpu\n", out)
    assert len(list((tmp_path / "d2l-plots").glob("*.png"))) == 1
