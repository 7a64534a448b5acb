"""Aligned text tables: the one formatter behind every table lenet prints or writes.

Cells arrive as strings, already formatted by their owner (`f"{acc:.4f}"`):
this module only pads and joins them, so every table has the same look, plain
(columns two spaces apart, a rule under the header) or GitHub markdown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

GAP = "  "  # between the columns of a plain table


def format_row(cells: Sequence[str], widths: Sequence[int], align: str) -> str:
    """One plain line: each cell padded to its width, 'l'eft or 'r'ight aligned as `align`
    says (one letter a column). For tables printed a row at a time, at fixed widths."""
    padded = [cell.ljust(w) if a == "l" else cell.rjust(w)
              for cell, w, a in zip(cells, widths, align, strict=True)]
    return GAP.join(padded).rstrip()


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, align: str = "",
                 footer: Sequence[Sequence[str]] = (), rule: bool = True,
                 markdown: bool = False) -> str:
    """A table sized to its widest cells: header, rows, then `footer` rows (totals) after a
    rule. `align` has a letter a column, 'l' or 'r' (default: the first column left, the
    others right, as numbers read best). `rule=False` leaves out the rule under the header
    of a plain table; `markdown=True` makes a GitHub pipe table instead.
    """
    body = [tuple(row) for row in rows]
    lines = [tuple(header), *body, *footer]
    for line in lines:
        if len(line) != len(header):
            raise ValueError(f"a table row has {len(line)} cells for {len(header)} columns")
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    if markdown:
        def pipe(cells: Sequence[str]) -> str:
            padded = [c.ljust(w) if a == "l" else c.rjust(w)
                      for c, w, a in zip(cells, widths, align, strict=True)]
            return "| " + " | ".join(padded) + " |"

        dashes = ["-" * (w + 1) + (":" if a == "r" else "-") for w, a in zip(widths, align,
                                                                            strict=True)]
        return "\n".join([pipe(header), "|" + "|".join(dashes) + "|", *map(pipe, body),
                          *map(pipe, footer)])
    first = format_row(header, widths, align)
    ruler = ["-" * len(first)]
    return "\n".join([first, *(ruler if rule else []),
                      *(format_row(row, widths, align) for row in body),
                      *(ruler + [format_row(row, widths, align) for row in footer]
                        if footer else [])])
