"""Helpers for the tests of the chapter's JAX and TensorFlow tabs (lenet.d2l.jax, .tensorflow)."""

from __future__ import annotations

import subprocess
import sys


def modules_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` are in sys.modules after running `code` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(n for n in {names!r} if n in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()
