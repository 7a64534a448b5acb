"""Building the native kernel (lenet/native/build.py): warnings fail a build, failures are
cached, the cache key follows source, compiler and target, OpenMP is optional, forced ISA
levels, cross-compiling. Small C files of the tests' own stand in for lenet5.c."""

import platform
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from lenet.errors import ConfigError
from lenet.native import build, lenet5

X86 = platform.machine() in ("x86_64", "AMD64")
CLEAN = "int answer(void) { return 42; }\n"
WARNS = "int answer(void) { int unused; return 42; }\n"  # -Wall: unused variable


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache; this process's build state restored afterwards."""
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(build.MARCH_ENV, raising=False)
    monkeypatch.delenv("LENET_NATIVE", raising=False)
    saved = dict(build._loaded)
    build.load.cache_clear()
    yield tmp_path / "cache" / "native"
    build.load.cache_clear()
    build._loaded.clear()
    build._loaded.update(saved)


def source(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.c"
    path.write_text(text)
    return path


def wrapper(tmp_path: Path, body: str, name: str = "cc") -> str:
    """A compiler script that logs its calls to calls.log, then does `body` (sh)."""
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls.log"\n{body}\n')
    script.chmod(0o755)
    return str(script)


def compiles(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    return [c for c in calls if " -o " in f" {c}"]


def test_a_clean_build_is_cached_with_its_log(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", wrapper(tmp_path, 'exec gcc "$@"'))
    built = build.build("tiny", source(tmp_path, CLEAN))
    assert built.path.parent == cache and built.path.exists() and built.openmp
    assert "-fopenmp" in built.flags and "-Werror" in built.flags and "-march=native" in built.flags
    assert built.log.read_text().startswith("$ ") and "(no output)" in built.log.read_text()
    stamp = built.path.stat().st_mtime_ns
    again = build.build("tiny", source(tmp_path, CLEAN))
    assert again.path == built.path and built.path.stat().st_mtime_ns == stamp
    assert len(compiles(tmp_path)) == 1
    assert sorted(p.suffix for p in cache.iterdir()) == [".log", ".so"]  # no temporary files
    changed = build.build("tiny", source(tmp_path, CLEAN + "int other(void) { return 1; }\n"))
    assert changed.path != built.path  # the source is in the key


def test_a_warning_fails_the_build_once_and_for_all(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", wrapper(tmp_path, 'exec gcc "$@"'))
    with pytest.raises(build.BuildError, match=r"could not compile tiny\.c cleanly") as error:
        build.build("tiny", source(tmp_path, WARNS))
    message = str(error.value)
    assert "\n" not in message and "unused" in message and ".failed" in message
    failed = error.value.build.failed
    assert len(failed) == 2 and all(p.exists() for p in failed)  # OpenMP, then serial
    assert "-fopenmp" in failed[0].read_text() and "unused" in failed[0].read_text()
    assert not list(cache.glob("*.so"))
    with pytest.raises(build.BuildError):
        build.build("tiny", source(tmp_path, WARNS))
    assert len(compiles(tmp_path)) == 2  # the cached verdict: no retry


def test_any_compiler_output_fails_the_build(cache, tmp_path, monkeypatch):
    # exit status 0, but a note on stderr (GCC's psABI note is one): not clean
    monkeypatch.setenv("CC", wrapper(tmp_path, 'gcc "$@" && echo "note: something" >&2'))
    with pytest.raises(build.BuildError, match="note: something"):
        build.build("tiny", source(tmp_path, CLEAN))


def test_no_openmp_means_a_serial_build(cache, tmp_path, monkeypatch):
    # Apple clang: "unsupported option '-fopenmp'"
    monkeypatch.setenv("CC", wrapper(tmp_path, 'case "$*" in *-fopenmp*) echo "clang: error: '
                                     "unsupported option '-fopenmp'\" >&2; exit 1;; esac\n"
                                     'exec gcc "$@"'))
    tiny = source(tmp_path, "#pragma omp parallel for\n" + CLEAN)  # ignored, no warning
    built = build.build("tiny", tiny)
    assert not built.openmp and "-fopenmp" not in built.flags
    assert "unsupported option" in built.failed[0].read_text()
    assert build.build("tiny", tiny).path == built.path
    assert len(compiles(tmp_path)) == 2  # the OpenMP attempt is not retried


def test_the_key_covers_the_local_headers(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", wrapper(tmp_path, 'exec gcc "$@"'))
    (tmp_path / "width.h").write_text("#define WIDTH 4\n")
    tiny = source(tmp_path, '#include "width.h"\nint width(void) { return WIDTH; }\n')
    first = build.build("tiny", tiny)
    assert first.path is not None
    (tmp_path / "width.h").write_text("#define WIDTH 8\n")  # the source's bytes unchanged
    assert build.build("tiny", tiny).path != first.path
    # the package's kernels include their shared one
    shipped = build.SOURCE_DIR / "vector_width.h"
    for kernel in ("lenet5", "knn"):
        assert shipped.read_bytes() in build.with_headers(build.SOURCE_DIR / f"{kernel}.c")


def test_the_key_covers_compiler_and_target(cache, tmp_path, monkeypatch):
    tiny = source(tmp_path, CLEAN)
    monkeypatch.setenv("CC", wrapper(tmp_path, 'exec gcc "$@"', "cc1"))
    first = build.build("tiny", tiny).path
    # another compiler identity (`cc --version`), same behaviour otherwise
    monkeypatch.setenv("CC", wrapper(tmp_path, 'case "$*" in --version) echo "cc 99";; '
                                     '*) exec gcc "$@";; esac', "cc2"))
    assert build.build("tiny", tiny).path != first
    if X86:
        monkeypatch.setenv(build.MARCH_ENV, "x86-64-v2")
        forced = build.build("tiny", tiny)
        assert "-march=x86-64-v2" in forced.flags and forced.path != first
        assert forced.toolchain.vector_width() == 4


def test_march_values_are_checked(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(build.MARCH_ENV, "x86-64-v3; rm -rf /")
    with pytest.raises(build.BuildError, match="is not a -march value"):
        build.build("tiny", source(tmp_path, CLEAN))
    monkeypatch.setenv(build.MARCH_ENV, "no-such-cpu")
    with pytest.raises(build.BuildError, match=r"LENET_NATIVE_MARCH=no-such-cpu: .* rejects"):
        build.build("tiny", source(tmp_path, CLEAN))


@pytest.mark.skipif(not X86, reason="x86-64 levels")
def test_a_level_this_cpu_cannot_run_is_refused(cache, tmp_path, monkeypatch):
    # a CPU whose -march=native is x86-64-v2 (SSE4.2, no AVX)
    monkeypatch.setenv("CC", wrapper(tmp_path, 'case "$*" in *-march=native*-dM*) '
                                     'exec gcc -march=x86-64-v2 -dM -E -x c - ;; esac\n'
                                     'exec gcc "$@"'))
    monkeypatch.setenv(build.MARCH_ENV, "x86-64-v3")
    with pytest.raises(build.BuildError, match=r"x86-64-v3 needs .*__AVX2__.*this CPU lacks"):
        build.build("tiny", source(tmp_path, CLEAN))


def test_vector_width_follows_the_feature_macros():
    def width(*macros: str) -> int:
        text = "".join(f"#define {m} 1\n" for m in macros)
        return build.Toolchain(("cc",), "cc", "", None, text).vector_width()

    assert width("__AVX512F__", "__AVX2__", "__AVX__", "__SSE2__") == 16
    assert width("__AVX2__", "__AVX__", "__FMA__", "__SSE2__") == 8
    assert width("__SSE2__") == 4 and width("__ARM_NEON") == 4 and width() == 1


def test_no_compiler_means_pytorchs_kernels_with_one_warning(cache, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.raises(build.BuildError, match="fails on an empty file"):
        build.build("lenet5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build.load("lenet5") is None
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and "\n" not in lines[0] and "PyTorch's layers run" in lines[0]
    monkeypatch.delenv("CC")
    monkeypatch.setenv("LENET_NATIVE", "0")
    build.load.cache_clear()
    assert build.load("lenet5") is None and build.last_build("lenet5") == "LENET_NATIVE=0"


def test_bad_lenet_native_values_speak_to_the_user(cache, monkeypatch):
    monkeypatch.setenv("LENET_NATIVE", "sometimes")
    with pytest.raises(ConfigError, match="LENET_NATIVE='sometimes': use 1"):
        build.load("lenet5")
    for value, mode in (("1", "on"), ("0", "off"), ("", "auto"), ("auto", "auto")):
        monkeypatch.setenv("LENET_NATIVE", value)
        assert build.mode() == mode


def test_an_abi_mismatch_is_one_warning(monkeypatch):
    def abi() -> int:
        return lenet5.ABI_VERSION + 1

    stale = SimpleNamespace(lenet5_abi_version=abi)  # a library built from an older lenet5.c
    monkeypatch.setattr(lenet5.build, "load", lambda name: stale)
    monkeypatch.setattr(lenet5, "_origin", {})
    lenet5.library.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert not lenet5.available()
        assert len(caught) == 1 and "ABI version" in str(caught[0].message)
        assert "ABI version" in lenet5.why_not()
        assert lenet5.describe().startswith("PyTorch's (native kernel not used: its ABI")
    finally:
        lenet5.library.cache_clear()


def test_cross_compiling_uses_the_same_strict_flags(tmp_path, capsys):
    # the machine's gcc stands in for a cross compiler: both flag sets, no -march
    assert build.main(["--cross", "gcc", "--source", str(source(tmp_path, CLEAN))]) == 0
    out = capsys.readouterr().out
    assert out.count("clean: $ gcc -O3") == 2 and "-fopenmp" in out and "-march" not in out
    assert build.main(["--cross", "gcc", "--source", str(source(tmp_path, WARNS))]) == 1
    assert "FAILED" in capsys.readouterr().out
