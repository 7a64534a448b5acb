"""The book's plotting helpers: live in Jupyter, PNG files everywhere else.

In a Jupyter kernel a figure is redrawn in place, as the book's do. Outside
one, figures are plain matplotlib `Figure`s (no pyplot, so no window and no
blocking) written to `./d2l-plots/figure-N.png` (or `$LENET_D2L_PLOTS/`); the
path is printed once per figure, and the file is rewritten at most every
`SAVE_EVERY_S` seconds while it changes, and once more when training ends or
the program exits: the first figure a program makes registers one `atexit`
hook (`_flush_all`) that saves figures with unsaved points, so the last
epochs of a script are never missing from its PNG. Importing this module
registers nothing.
"""

from __future__ import annotations

import atexit
import itertools
import os
import time
import warnings
import weakref
from collections import OrderedDict, namedtuple
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .hparams import HyperParameters

SAVE_EVERY_S = 10.0
Point = namedtuple("Point", ["x", "y"])
_live_figures: weakref.WeakSet[FigureOutput] = weakref.WeakSet()


def _new_figure_path() -> Path:
    """The first unused figure-N.png in the plots directory (earlier runs are kept)."""
    directory = Path(os.environ.get("LENET_D2L_PLOTS", "d2l-plots"))
    directory.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = directory / f"figure-{n}.png"
        if not path.exists():
            path.touch()  # claim it
            return path
    raise AssertionError("unreachable")


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def use_svg_display() -> None:
    """Use the svg format to display a plot in Jupyter (a no-op elsewhere)."""
    if in_notebook():
        from matplotlib_inline import backend_inline

        backend_inline.set_matplotlib_formats("svg")


def set_figsize(figsize: tuple[float, float] = (3.5, 2.5)) -> None:
    """Set the default figure size for pyplot figures the reader makes."""
    import matplotlib

    use_svg_display()
    matplotlib.rcParams["figure.figsize"] = figsize


def set_axes(axes: Any, xlabel: str | None, ylabel: str | None, xlim: Any, ylim: Any,
             xscale: str, yscale: str, legend: Sequence[str] | None) -> None:
    """Set the axes for matplotlib, as the book's `d2l.set_axes`."""
    axes.set_xlabel(xlabel), axes.set_ylabel(ylabel)
    axes.set_xscale(xscale), axes.set_yscale(yscale)
    with warnings.catch_warnings():  # xlim=[1, 1] for a 1-epoch run: matplotlib widens it
        warnings.simplefilter("ignore", UserWarning)
        axes.set_xlim(xlim), axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


class FigureOutput:
    """Shows one figure: redraws it in a notebook, or keeps a PNG of it up to date."""

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.path: Path | None = None
        self._last_save = 0.0
        self._dirty = False
        if not _live_figures:  # the first figure: save what is unsaved when the program ends
            atexit.unregister(_flush_all)  # (once, however many figures come and go)
            atexit.register(_flush_all)
        _live_figures.add(self)

    def show(self, *, final: bool = False) -> None:
        if in_notebook():
            from IPython import display

            display.display(self.fig)
            display.clear_output(wait=True)
            return
        self._dirty = True
        if final or time.monotonic() - self._last_save >= SAVE_EVERY_S:
            self.save()

    def save(self) -> Path:
        if self.path is None:
            self.path = _new_figure_path()
            print(f"plot: {self.path.resolve()}")
        self.fig.savefig(self.path, dpi=150, bbox_inches="tight")
        self._last_save, self._dirty = time.monotonic(), False
        return self.path

    def flush(self) -> None:
        if self._dirty and not in_notebook():
            self.save()


def _flush_all() -> None:
    for output in list(_live_figures):
        output.flush()


def _mean(values: list) -> float:
    """The mean of plotted values: floats, or tensors of any framework (read once here).

    torch is imported only when the values are torch's: the JAX and TensorFlow tabs
    plot with this board too, and must not import torch.
    """
    if type(values[0]).__module__.startswith("torch"):
        import torch

        return torch.stack(values).float().mean().item()
    return sum(float(v) for v in values) / len(values)


class ProgressBoard(HyperParameters):
    """The plot of data points in animation (the current edition's board)."""

    def __init__(self, xlabel: str | None = None, ylabel: str | None = None, xlim: Any = None,
                 ylim: Any = None, xscale: str = "linear", yscale: str = "linear",
                 ls: Sequence[str] = ("-", "--", "-.", ":"),
                 colors: Sequence[str] = ("C0", "C1", "C2", "C3"), fig: Figure | None = None,
                 axes: Any = None, figsize: tuple[float, float] = (3.5, 2.5),
                 display: bool = True) -> None:
        self.save_hyperparameters()
        self.output: FigureOutput | None = None

    def draw(self, x: float, y: Any, label: str, every_n: int = 1) -> None:
        """Add a point; every `every_n` points, plot their mean and redraw."""
        if not hasattr(self, "raw_points"):
            self.raw_points: OrderedDict[str, list] = OrderedDict()
            self.data: OrderedDict[str, list] = OrderedDict()
        if label not in self.raw_points:
            self.raw_points[label], self.data[label] = [], []
        points, line = self.raw_points[label], self.data[label]
        points.append(Point(x, y))
        if len(points) != max(every_n, 1):
            return
        # Values may be device tensors: read them once per plotted point, not per step.
        ys = [p.y for p in points]
        line.append(Point(sum(p.x for p in points) / len(points), _mean(ys)))
        points.clear()
        if self.display:
            self._redraw()

    def _redraw(self, *, final: bool = False) -> None:
        if self.fig is None:
            self.fig = Figure(figsize=self.figsize)
        axes = self.axes or (self.fig.axes[0] if self.fig.axes else self.fig.add_subplot())
        axes.cla()
        lines, labels = [], []
        for (k, v), ls, color in zip(self.data.items(), self.ls, self.colors, strict=False):
            lines.append(axes.plot([p.x for p in v], [p.y for p in v], linestyle=ls,
                                   color=color)[0])
            labels.append(k)
        if self.xlim:
            axes.set_xlim(self.xlim)
        if self.ylim:
            axes.set_ylim(self.ylim)
        # The book writes `self.xlabel = self.x` here, an attribute nothing sets: a board
        # made without an x label would fail at its first plot. Its points are (x, y).
        axes.set_xlabel(self.xlabel or "x")
        axes.set_ylabel(self.ylabel)
        axes.set_xscale(self.xscale)
        axes.set_yscale(self.yscale)
        axes.legend(lines, labels)
        self.output = self.output or FigureOutput(self.fig)
        self.output.show(final=final)

    def finish(self) -> None:
        """Write the final state of the plot (called when training ends)."""
        if self.display and getattr(self, "data", None):
            self._redraw(final=True)


class Animator:
    """For plotting data in animation (the previous edition's `train_ch6` plot)."""

    def __init__(self, xlabel: str | None = None, ylabel: str | None = None,
                 legend: Sequence[str] | None = None, xlim: Any = None, ylim: Any = None,
                 xscale: str = "linear", yscale: str = "linear",
                 fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), nrows: int = 1,
                 ncols: int = 1, figsize: tuple[float, float] = (3.5, 2.5)) -> None:
        legend = legend or []
        use_svg_display()
        self.fig = Figure(figsize=figsize)
        axes = self.fig.subplots(nrows, ncols)
        self.axes = [axes] if nrows * ncols == 1 else list(axes.flat)
        self.config_axes = lambda: set_axes(self.axes[0], xlabel, ylabel, xlim, ylim, xscale,
                                            yscale, legend)
        self.X: list[list] | None = None
        self.Y: list[list] | None = None
        self.fmts = fmts
        self.output = FigureOutput(self.fig)

    def add(self, x: Any, y: Any) -> None:
        """Add multiple data points into the figure and redraw it."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y, strict=False)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        self.axes[0].cla()
        for xs, ys, fmt in zip(self.X, self.Y, self.fmts, strict=False):
            self.axes[0].plot(xs, ys, fmt)
        self.config_axes()
        self.output.show()

    def finish(self) -> None:
        self.output.show(final=True)


def show_images(imgs: Any, num_rows: int, num_cols: int, titles: Sequence[str] | None = None,
                scale: float = 1.5) -> Any:
    """Plot a list of images (the book's `d2l.show_images`); returns the axes."""
    fig = Figure(figsize=(num_cols * scale, num_rows * scale))
    axes = fig.subplots(num_rows, num_cols, squeeze=False).flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs, strict=False)):
        if hasattr(img, "detach"):  # a tensor
            img = img.detach().cpu().numpy()
        ax.imshow(img, cmap="gray" if getattr(img, "ndim", 3) == 2 else None)
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    fig.tight_layout()
    FigureOutput(fig).show(final=True)
    return axes
