"""The shared helpers: atomic writes and aligned tables."""

import pytest

from lenet.base.atomic import atomic_path, write_text
from lenet.base.tables import format_row, format_table


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_plain_table_aligns_text_left_and_numbers_right_with_totals():
    table = format_table(("layer", "params"), [("conv1", "156"), ("fc1", "48,120")],
                         footer=[("total", "48,276")])
    assert table.splitlines() == [
        "layer  params",
        "-------------",
        "conv1     156",
        "fc1    48,120",
        "-------------",
        "total  48,276",
    ]
    assert format_table(("a", "b"), [("x", "1")], rule=False) == "a  b\nx  1"


def test_markdown_table_marks_right_aligned_columns():
    table = format_table(("run", "accuracy"), [("a", "0.9"), ("long", "0.91")], markdown=True)
    assert table.splitlines() == [
        "| run  | accuracy |",
        "|------|---------:|",
        "| a    |      0.9 |",
        "| long |     0.91 |",
    ]


def test_rows_at_fixed_widths_and_wrong_cell_counts():
    assert format_row(("1", "0.5000"), (5, 8), "rr") == "    1    0.5000"
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        format_table(("a", "b", "c"), [("x", "y")])
