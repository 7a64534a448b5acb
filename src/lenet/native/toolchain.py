"""The C compiler and the target it builds for: its identity, the target's feature macros,
and the vector width the kernel gets there.

The target is `-march=$LENET_NATIVE_MARCH` (default `native`: this CPU). Its feature macros
(`cc -march=... -dM -E` of an empty file) stand in for /proc/cpuinfo (they work on macOS
too) in the build cache's key and tell which instruction sets a forced level needs: one this
CPU lacks is refused rather than built into a library that would crash.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from functools import cache

MARCH_ENV = "LENET_NATIVE_MARCH"
_MARCH_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
# Feature macros that name instruction sets: what a forced -march may not need beyond the CPU.
_ISA_MACRO = re.compile(r"#define (__(?:AVX|SSE|SSSE|FMA|F16C|BMI|LZCNT|POPCNT|MOVBE|AES|"
                        r"PCLMUL|SHA|GFNI|VAES|VPCLMULQDQ|XSAVE|ADX|AMX|ARM_NEON|"
                        r"ARM_FEATURE_)\w*) 1$", re.MULTILINE)


class BuildError(RuntimeError):
    def __init__(self, message: str, build: object = None) -> None:
        super().__init__(message)
        self.build = build  # the build.Build that was tried, with its logs


def requested_march() -> tuple[str, bool]:
    """(-march value, whether the user chose it) from $LENET_NATIVE_MARCH, checked."""
    value = os.environ.get(MARCH_ENV, "").strip()
    if not value:
        return "native", False
    if not _MARCH_VALUE.match(value):
        raise BuildError(f"{MARCH_ENV}={value!r} is not a -march value (e.g. native, "
                         "x86-64-v2, x86-64-v3, x86-64-v4)")
    return value, True


def compiler() -> list[str] | None:
    """The C compiler command: $CC, then Python's own, then cc/gcc/clang on PATH."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if candidate:
            command = shlex.split(candidate)
            if command and shutil.which(command[0]):
                return command
    return None


def run_command(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout)


@dataclass(frozen=True)
class Toolchain:
    """A compiler and the target it builds for, as the cache key and `lenet doctor` see them."""

    command: tuple[str, ...]
    path: str
    version: str  # all of `cc --version`
    march: str | None  # None: the compiler's default target (it rejected -march=native)
    macros: str  # `cc -march=... -dM -E -` of an empty file

    @property
    def version_line(self) -> str:
        return self.version.strip().splitlines()[0] if self.version.strip() else "?"

    @property
    def march_flags(self) -> tuple[str, ...]:
        return (f"-march={self.march}",) if self.march else ()

    def isa(self) -> set[str]:
        return set(_ISA_MACRO.findall(self.macros))

    def vector_width(self) -> int:
        """Floats per vector the kernel uses for this target (as lenet5.c picks it)."""
        isa = self.isa()
        if "__AVX512F__" in isa:
            return 16
        if "__AVX__" in isa:
            return 8
        if "__SSE2__" in isa or "__ARM_NEON" in isa:
            return 4
        return 1


def _macros(cc: list[str], march: str | None) -> subprocess.CompletedProcess[str]:
    flags = [f"-march={march}"] if march else []
    return run_command([*cc, *flags, "-dM", "-E", "-x", "c", "-"], timeout=60)


@cache
def _toolchain(cc: tuple[str, ...], march: str, chosen: bool) -> Toolchain:
    path = shutil.which(cc[0]) or cc[0]
    try:
        version = run_command([*cc, "--version"], timeout=60).stdout
        probe = _macros(list(cc), march)
        target: str | None = march
        if probe.returncode != 0 and not chosen:  # a compiler without -march=native
            target, probe = None, _macros(list(cc), None)
        if probe.returncode != 0:
            first = (probe.stderr.strip().splitlines() or ["(no message)"])[0]
            if not chosen:
                raise BuildError(f"the C compiler `{' '.join(cc)}` fails on an empty file: "
                                 f"{first}")
            raise BuildError(f"{MARCH_ENV}={march}: {' '.join(cc)} rejects -march={march}: "
                             f"{first}")
        native = probe if target == "native" else _macros(list(cc), "native")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"could not run the C compiler {' '.join(cc)}: {error}") from error
    chain = Toolchain(cc, path, version, target, probe.stdout)
    if native.returncode == 0:  # a forced level this CPU cannot run would crash it
        missing = chain.isa() - set(_ISA_MACRO.findall(native.stdout))
        if missing:
            raise BuildError(f"{MARCH_ENV}={march} needs {', '.join(sorted(missing))}, which "
                             "this CPU lacks")
    return chain


def toolchain(cc: list[str] | None = None, march: str | None = None) -> Toolchain:
    """The compiler ($CC or the first found) and target ($LENET_NATIVE_MARCH or native)."""
    cc = cc or compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC, or install gcc or clang)")
    chosen = march is not None
    if march is None:
        march, chosen = requested_march()
    return _toolchain(tuple(cc), march, chosen)


def cross_toolchain(cc: list[str], march: str | None) -> Toolchain:
    """A cross compiler at `march` or its default target (there is no 'native' there)."""
    if march is not None and not _MARCH_VALUE.match(march):
        raise BuildError(f"--march {march!r} is not a -march value")
    try:
        version = run_command([*cc, "--version"], timeout=60).stdout
        probe = _macros(cc, march)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildError(f"could not run {' '.join(cc)}: {error}") from error
    if probe.returncode != 0:
        raise BuildError(f"{' '.join(cc)} failed: {probe.stderr.strip()[:300]}")
    return Toolchain(tuple(cc), shutil.which(cc[0]) or cc[0], version, march, probe.stdout)

