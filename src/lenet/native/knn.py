"""The k-NN detector's score for batches, compiled (knn.c): the k-th largest similarity of
each query to a bank of unit vectors, without a (queries x bank) matrix or a top-k pass.

    bank_t = np.ascontiguousarray(bank.T)          # (d, m), once per bank
    kth = kth_similarity(queries, bank_t, k)       # float32 (n,), or None: use PyTorch

None when the library cannot be built (no compiler; `why_not` says why), when
LENET_NATIVE=0 turns every native path off, or when the build's vectors are narrower than
8 floats (SSE, NEON, plain C) and LENET_NATIVE=1 does not insist: there PyTorch's product
and top-k were faster (3.9 vs 2.2 ms for 256 queries, x86-64-v2 build on an AVX-512 CPU).
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

from . import build

ABI_VERSION = 1
MAX_K = 64  # knn.c's
MIN_VECTOR = 8  # floats a vector: AVX or wider, unless LENET_NATIVE=1
_why: dict[str, str | None] = {}


@cache
def library() -> ctypes.CDLL | None:
    lib, _why["not"] = build.checked_library("knn", ABI_VERSION)
    if lib is not None:
        lib.knn_vector_width.restype = ctypes.c_int
        lib.knn_kth_similarity.restype = None
        lib.knn_kth_similarity.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                                           ctypes.c_void_p, ctypes.c_long, ctypes.c_int,
                                           ctypes.c_void_p]
    return lib


def usable() -> ctypes.CDLL | None:
    """The library, where the compiled path is to be used (see above); else None."""
    mode = build.mode()
    lib = library() if mode != "off" else None
    if lib is None or (mode == "auto" and lib.knn_vector_width() < MIN_VECTOR):
        return None
    return lib


def describe() -> str:
    """Which path scores batches, and why (lenet doctor)."""
    fallback = "PyTorch's product and top-k"
    if build.mode() == "off":
        return f"off ({build.MODE_ENV}=0): {fallback}"
    lib = library()
    if lib is None:
        return f"not built ({why_not()}): {fallback}"
    width = lib.knn_vector_width()
    if usable() is None:
        return (f"built, {width} floats a vector, not used (slower than {fallback} below "
                f"{MIN_VECTOR}; {build.MODE_ENV}=1 forces it)")
    return f"compiled, {width} floats a vector"


def why_not() -> str | None:
    """Why `library()` is None (None when it is not)."""
    return None if library() is not None else _why.get("not") or "not built"


def kth_similarity(queries: np.ndarray, bank_t: np.ndarray, k: int) -> np.ndarray | None:
    """The k-th largest of `queries @ bank_t` per row (float32 (n,)), or None where the
    compiled path is off, missing or slower (see above). `queries` (n, d), `bank_t`
    (d, m): the bank transposed; k in 1..min(m, 64)."""
    lib = usable()
    if lib is None or not 1 <= k <= min(bank_t.shape[1], MAX_K):
        return None
    q = np.ascontiguousarray(queries, np.float32)
    b = np.ascontiguousarray(bank_t, np.float32)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[0]:
        raise ValueError(f"queries {q.shape} and a transposed bank {b.shape} do not match")
    out = np.empty(len(q), np.float32)
    lib.knn_kth_similarity(q.ctypes.data, len(q), q.shape[1], b.ctypes.data, b.shape[1], k,
                           out.ctypes.data)
    return out
