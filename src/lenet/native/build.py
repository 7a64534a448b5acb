"""Compile a C source of this package into a shared library, once per build setting, and load it.

The library is built for one target, `-march=$LENET_NATIVE_MARCH` (default `native`: this
CPU), with warnings as errors: any compiler output fails the build, because a build that
warns can run several times slower than PyTorch (GCC's psABI warning says a vector type is
wider than the target's registers and lives on the stack). Without OpenMP (Apple clang)
the kernel is built serial.

Libraries are cached under $LENET_CACHE_DIR/native (default $XDG_CACHE_HOME/lenet or
~/.cache/lenet), keyed by the source, the compiler's identity (`cc --version`), the
target's feature macros (`cc -march=... -dM -E`), torch's version and C++ ABI (the library
binds to torch's libgomp) and the flags: a cache shared between machines never hands one
another's instructions. Beside each library lies its build log; a failed build leaves
`<name>-<key>.failed` (its log) so that it is not retried until one of those changes.
Files are written atomically (temporary file, then rename): a sweep's workers may build
at once.

`python -m lenet.native.build [--cross CC] [--march LEVEL]` compiles with the same flags
and says whether it was clean (CI cross-compiles for aarch64 with it).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..base.atomic import atomic_path, write_text
from ..errors import ConfigError
from .toolchain import (
    MARCH_ENV,
    BuildError,
    Toolchain,
    compiler,
    cross_toolchain,
    run_command,
    toolchain,
)

# MARCH_ENV, BuildError, Toolchain, compiler and toolchain are toolchain.py's, named here too
__all__ = ["MARCH_ENV", "MODE_ENV", "Build", "BuildError", "Toolchain", "build", "cache_dir",
           "checked_library", "compile_once", "compiler", "flag_sets", "last_build", "load",
           "main", "mode", "toolchain"]

SOURCE_DIR = Path(__file__).parent
MODE_ENV = "LENET_NATIVE"  # 1: always the kernel; 0: never; unset: the guard measures
STRICT = ("-O3", "-shared", "-fPIC", "-std=gnu11", "-Wall", "-Wextra", "-Werror")
OPENMP = ("-fopenmp",)
SERIAL = ("-Wno-unknown-pragmas",)  # without OpenMP its pragmas are meant to be ignored

def mode() -> str:
    """'off', 'on' (no guard) or 'auto' (the guard decides), from $LENET_NATIVE."""
    value = os.environ.get(MODE_ENV, "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("0", "false", "no", "off"):
        return "off"
    if value in ("1", "true", "yes", "on"):
        return "on"
    raise ConfigError(f"{MODE_ENV}={os.environ[MODE_ENV]!r}: use 1 (always the native "
                      "kernel), 0 (never) or leave it unset (measure, then decide)")


def cache_dir() -> Path:
    root = os.environ.get("LENET_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet"
    return Path(root) / "native"


def flag_sets(chain: Toolchain) -> list[list[str]]:
    """Compiler flags to try, best first: with OpenMP, then serial."""
    base = [*STRICT, *chain.march_flags]
    return [[*base, *OPENMP], [*base, *SERIAL]]


def _torch_identity() -> str:
    import torch

    return f"torch {torch.__version__} cxx11abi {int(torch._C._GLIBCXX_USE_CXX11_ABI)}"


@dataclass
class Build:
    """What `build` produced: the library (or None) and the logs of what it tried."""

    name: str
    toolchain: Toolchain
    path: Path | None = None  # the library
    flags: list[str] = field(default_factory=list)  # those it was built with
    log: Path | None = None
    failed: list[Path] = field(default_factory=list)  # logs of flag sets that failed

    @property
    def openmp(self) -> bool:
        return "-fopenmp" in self.flags

    def failure_summary(self) -> str:
        """The first failed log's path and first lines, for one warning line."""
        if not self.failed:
            return "no build was tried"
        log = self.failed[0]
        lines = [line for line in _read(log).splitlines()[1:] if line.strip()][:2]
        return f"{log}: " + " | ".join(line.strip()[:160] for line in lines)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class _Unclean(Exception):
    """A compile that said something: its library is not kept."""


def compile_once(command: list[str], source: Path, output: str) -> tuple[bool, str]:
    """Run one compile; (clean, log). Clean means exit 0 and nothing on stdout or stderr."""
    full = [*command, "-o", output, str(source), "-lm"]
    result = run_command(full)
    said = (result.stdout + result.stderr).strip()
    log = f"$ {shlex.join(full)}\n{said}\n" if said else f"$ {shlex.join(full)}\n(no output)\n"
    return result.returncode == 0 and not said, log


def with_headers(source: Path) -> bytes:
    """The source's bytes and those of the local headers it includes (`#include "x.h"`,
    beside it): what the build cache key must cover."""
    text = source.read_bytes()
    headers = re.findall(rb'^\s*#\s*include\s+"([^"]+)"', text, flags=re.MULTILINE)
    return b"\0".join([text, *((source.parent / h.decode()).read_bytes() for h in headers)])


def build(name: str = "lenet5", source: Path | None = None) -> Build:
    """Build (or find in the cache) the library of `source` (default SOURCE_DIR/name.c).
    Raises BuildError when no flag set builds cleanly; its message gives the log."""
    source = source or SOURCE_DIR / f"{name}.c"
    chain = toolchain()
    text = with_headers(source)
    result = Build(name, chain)
    suffix = sysconfig.get_config_var("SHLIB_SUFFIX") or ".so"
    for flags in flag_sets(chain):
        identity = [chain.version, chain.macros, _torch_identity(), shlex.join(flags)]
        key = hashlib.sha256(b"\0".join([text, *(s.encode() for s in identity)])
                             ).hexdigest()[:16]
        stem = cache_dir() / f"{name}-{key}"
        target, log, failed = stem.with_suffix(suffix), stem.with_suffix(".log"), \
            stem.with_suffix(".failed")
        if target.exists():
            result.path, result.flags, result.log = target, flags, log
            return result
        if failed.exists():  # cached verdict: same source, compiler, target and flags
            result.failed.append(failed)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(target) as tmp:  # concurrent builders each write their own
                clean, text_log = compile_once([*chain.command, *flags], source, str(tmp))
                write_text(log if clean else failed, text_log)
                if not clean:
                    raise _Unclean
            result.path, result.flags, result.log = target, flags, log
            return result
        except _Unclean:
            result.failed.append(failed)
        except (OSError, subprocess.TimeoutExpired) as error:  # not cached: may be transient
            raise BuildError(f"could not compile {source.name}: {error}") from error
    raise BuildError(f"could not compile {source.name} cleanly (log: "
                     f"{result.failure_summary()})", result)


_loaded: dict[str, Build | str] = {}  # per library: its Build, or why there is none


def last_build(name: str = "lenet5") -> Build | str | None:
    """What `load(name)` found in this process: the Build, or why there is none."""
    return _loaded.get(name)


@cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled library `name`, or None (warning in one line why) when it cannot be had."""
    if mode() == "off":
        _loaded[name] = f"{MODE_ENV}=0"
        return None
    try:
        built = build(name)
        _loaded[name] = built
        return ctypes.CDLL(str(built.path))
    except (BuildError, OSError) as error:
        failed = getattr(error, "build", None)
        _loaded[name] = failed if failed is not None else str(error)
        warnings.warn(f"lenet: native {name} kernel not used, PyTorch's layers run instead: "
                      f"{error}", RuntimeWarning, stacklevel=2)
        return None


def checked_library(name: str, abi_version: int) -> tuple[ctypes.CDLL | None, str | None]:
    """(the compiled library `name`, None) if it builds, loads and its `<name>_abi_version()`
    is `abi_version` (what its bindings were written for); else (None, why). For the small
    kernels (knn, pixels, shm_reduce), whose callers fall back quietly; ignores
    LENET_NATIVE (callers decide)."""
    try:
        lib = ctypes.CDLL(str(build(name).path))
    except (BuildError, OSError) as error:
        return None, str(error)
    version = getattr(lib, f"{name}_abi_version")
    version.restype = ctypes.c_int
    if version() != abi_version:
        return None, (f"its ABI version is {version()}, its bindings expect {abi_version} "
                      "(bump both together)")
    return lib, None


def main(argv: list[str] | None = None) -> int:
    """Compile with lenet's flags and report; exit 1 unless every build is clean."""
    parser = argparse.ArgumentParser(prog="python -m lenet.native.build", description=main.__doc__)
    parser.add_argument("--name", default="lenet5", help="the C file's stem [lenet5]")
    parser.add_argument("--cross", metavar="CC", help="a cross compiler, e.g. "
                        "aarch64-linux-gnu-gcc: compile with and without OpenMP, load nothing")
    parser.add_argument("--march", help=f"target level [${MARCH_ENV} or native; the cross "
                        "compiler's default with --cross]")
    parser.add_argument("--source", type=Path, help="another C file [the package's NAME.c]")
    args = parser.parse_args(argv)
    source = args.source or SOURCE_DIR / f"{args.name}.c"
    try:
        if args.cross:
            chain = cross_toolchain(shlex.split(args.cross), args.march)
            ok = True
            with tempfile.TemporaryDirectory() as tmp:
                for flags in flag_sets(chain):
                    clean, log = compile_once([*chain.command, *flags], source,
                                              str(Path(tmp) / f"{args.name}.so"))
                    print(("clean: " if clean else "FAILED: ") + log.rstrip())
                    ok &= clean
            return 0 if ok else 1
        if args.march:
            os.environ[MARCH_ENV] = args.march
        built = build(args.name, source)
    except BuildError as error:
        print(f"lenet: error: {error}", file=sys.stderr)
        return 1
    print(f"built {built.path} ({built.toolchain.version_line}; {shlex.join(built.flags)}; "
          f"{built.toolchain.vector_width()} floats a vector); log: {built.log}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
