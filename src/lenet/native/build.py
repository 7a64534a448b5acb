"""Compile a C source of this package into a shared library once per machine, and load it.

The library is built for this CPU (-march=native) and cached under
$LENET_CACHE_DIR (default: $XDG_CACHE_HOME/lenet or ~/.cache/lenet), keyed by the
source, the compiler command and the CPU, so a cache shared between machines
never hands one the other's instructions. Builds are atomic: concurrent
processes (a sweep's workers) each write a temporary file and rename it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from functools import cache
from pathlib import Path

SOURCE_DIR = Path(__file__).parent
# Fastest first: OpenMP (PyTorch's runtime, see lenet5.c), then without it, then without
# -march=native for compilers that lack it.
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native"], ["-O3"])
DISABLE_ENV = "LENET_NATIVE"


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("LENET_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet"
    return Path(root) / "native"


def compiler() -> list[str] | None:
    """The C compiler command: $CC, then Python's own, then cc/gcc/clang on PATH."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if candidate:
            command = shlex.split(candidate)
            if command and shutil.which(command[0]):
                return command
    return None


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        first = text.split("\n\n", 1)[0]
        keep = [line for line in first.splitlines()
                if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(keep)
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def build(name: str) -> Path:
    """Path of the compiled library for `SOURCE_DIR/name.c`, building it if needed."""
    source = SOURCE_DIR / f"{name}.c"
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC, or install gcc or clang)")
    text = source.read_bytes()
    errors = []
    for flags in FLAG_SETS:
        command = [*cc, *flags, "-shared", "-fPIC", "-std=gnu11"]
        key = hashlib.sha256(b"\0".join([text, " ".join(command).encode(),
                                         _cpu_identity().encode()])).hexdigest()[:16]
        target = cache_dir() / f"{name}-{key}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}-", suffix=".tmp")
        os.close(fd)
        try:
            result = subprocess.run([*command, "-o", tmp, str(source), "-lm"],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                os.replace(tmp, target)
                return target
            errors.append(f"{' '.join(command)}: {result.stderr.strip()[-500:]}")
        except (OSError, subprocess.TimeoutExpired) as error:
            errors.append(f"{' '.join(command)}: {error}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise BuildError("could not compile " + source.name + ":\n" + "\n".join(errors))


@cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled library `name`, or None (warning once why) when it cannot be had."""
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return ctypes.CDLL(str(build(name)))
    except (BuildError, OSError) as error:
        warnings.warn(f"lenet: native {name} kernels unavailable, using PyTorch's ({error})",
                      RuntimeWarning, stacklevel=2)
        return None
