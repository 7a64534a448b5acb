"""The book's plotting helpers: live in Jupyter, PNG files everywhere else.

In an IPython kernel (Jupyter, JupyterLab, VS Code, Colab) a figure is shown as
an SVG image, as the book's `use_svg_display()` does, and updated in place: one
display per figure and cell (`display_id`), so training draws one live plot, not
a stack of them, and prints that follow (the book's closing lines) cannot clear
it. We render the image ourselves rather than through matplotlib's inline
backend: our figures are bare `Figure`s (no pyplot), which that backend neither
formats nor shows when the cell ends. Redraws are throttled to one per
`NOTEBOOK_EVERY_S`; a skipped one is drawn when training ends or the cell
finishes (an IPython `post_run_cell` hook), so the last points always show.

Outside a kernel, figures are plain matplotlib `Figure`s (no window and no
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
import io
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
NOTEBOOK_EVERY_S = 0.5
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


def _kernel_shell() -> Any:
    """The IPython shell of a kernel (Jupyter, VS Code, Colab), or None (a script, a terminal)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None
    in_kernel = hasattr(shell, "kernel") or "IPKernelApp" in getattr(shell, "config", {})
    return shell if in_kernel else None


def in_notebook() -> bool:
    return _kernel_shell() is not None


def use_svg_display() -> None:
    """Use the svg format to display a plot in Jupyter (a no-op elsewhere).

    Our own figures are always shown as SVG there; this sets the same format for
    the pyplot figures a reader makes beside the chapter."""
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


def _describe(fig: Figure) -> str:
    """A text stand-in for the image (front ends without SVG): each curve's last value."""
    parts = []
    for axes in fig.axes:
        legend = axes.get_legend()
        if legend is None:
            continue
        # Both boards name their lines in plotting order (the legend's own handles are
        # copies drawn in the legend box).
        for line, text in zip(axes.get_lines(), legend.get_texts(), strict=False):
            ys: Any = line.get_ydata()  # float data (matplotlib's type: any ArrayLike)
            last = f" {float(ys[-1]):.3f}" if len(ys) else ""
            parts.append(f"{text.get_text()}{last}")
    return f"[figure: {', '.join(parts)}]" if parts else "[figure]"


def _notebook_image(fig: Figure) -> dict[str, str]:
    """The figure as an IPython mime bundle: SVG, with a text alternative."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    return {"image/svg+xml": buffer.getvalue(), "text/plain": _describe(fig)}


class FigureOutput:
    """Shows one figure: redraws it in a notebook, or keeps a PNG of it up to date."""

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.path: Path | None = None
        self._last_save = 0.0
        self._dirty = False
        self._handle: Any = None  # the notebook display this figure updates
        self._cell: Any = None  # ... and the cell it belongs to
        if not _live_figures:  # the first figure: save what is unsaved when the program ends
            atexit.unregister(_flush_all)  # (once, however many figures come and go)
            atexit.register(_flush_all)
        _live_figures.add(self)

    def show(self, *, final: bool = False) -> None:
        self._dirty = True
        shell = _kernel_shell()
        if shell is not None:
            _watch_cells(shell)
            if final or time.monotonic() - self._last_save >= NOTEBOOK_EVERY_S:
                self.display(shell)
            return
        if final or time.monotonic() - self._last_save >= SAVE_EVERY_S:
            self.save()

    def display(self, shell: Any) -> None:
        """Show the figure in the running cell: a new display there, else update this cell's."""
        from IPython.display import display

        bundle = _notebook_image(self.fig)
        cell = getattr(shell, "execution_count", None)
        if self._handle is None or cell != self._cell:
            self._handle, self._cell = display(bundle, raw=True, display_id=True), cell
        else:
            self._handle.update(bundle, raw=True)
        self._last_save, self._dirty = time.monotonic(), False

    def save(self) -> Path:
        if self.path is None:
            self.path = _new_figure_path()
            print(f"plot: {self.path.resolve()}")
        self.fig.savefig(self.path, dpi=150, bbox_inches="tight")
        self._last_save, self._dirty = time.monotonic(), False
        return self.path

    def flush(self) -> None:
        if not self._dirty:
            return
        shell = _kernel_shell()
        if shell is None:
            self.save()
        elif self._handle is not None and self._cell == getattr(shell, "execution_count", None):
            self.display(shell)  # a throttled redraw of this cell's figure


_watched_shells: weakref.WeakSet[Any] = weakref.WeakSet()


def _watch_cells(shell: Any) -> None:
    """Once per shell: when a cell finishes, draw what its figures skipped."""
    if shell not in _watched_shells:
        shell.events.register("post_run_cell", lambda *_: _flush_all())
        _watched_shells.add(shell)


def _flush_all() -> None:
    for output in list(_live_figures):
        output.flush()


def _mean(values: list[Any]) -> float:
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

    # Set by save_hyperparameters from the constructor's arguments (the book's API).
    xlabel: str | None
    ylabel: Any  # str or None (which matplotlib draws as no label)
    xlim: Any
    ylim: Any
    xscale: str
    yscale: str
    ls: Sequence[str]
    colors: Sequence[str]
    fig: Figure | None
    axes: Any
    figsize: tuple[float, float]
    display: bool

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
            self.raw_points: OrderedDict[str, list[Point]] = OrderedDict()
            self.data: OrderedDict[str, list[Point]] = OrderedDict()
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
        self.X: list[list[float]] | None = None
        self.Y: list[list[float]] | None = None
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
