"""Slow imports a run needs later, started early on a thread of their own."""

from __future__ import annotations

import importlib
import threading

# Slow first imports that a run needs later: torch's optimizers import torch._dynamo at the
# first optimizer (about 2 s), and the curves at the end need matplotlib (about 1 s).
LATER_IMPORTS = ("torch._dynamo", "matplotlib.figure", "matplotlib.backends.backend_agg")


def import_in_background() -> threading.Thread:
    """Set-up step of `Run.fit(background_imports=True)`, the default: start those imports
    on one daemon thread, so that data loading (zlib, MD5, numpy: the GIL released) and
    training overlap them instead of waiting for them. It only imports modules; an import
    that fails here fails again where it is needed, with its real error."""
    def work() -> None:
        for name in LATER_IMPORTS:
            try:
                importlib.import_module(name)
            except Exception:  # reported where the module is used
                return

    thread = threading.Thread(target=work, name="lenet-imports", daemon=True)
    thread.start()
    return thread
