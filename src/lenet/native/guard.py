"""The guard: the fused kernel runs only where it measured faster than PyTorch's layers here.

A kernel can build cleanly and still lose to PyTorch (a CPU whose registers its blocking
does not fit, a thread count where oneDNN scales better). So the first time a kernel build
meets a setting (torch version, thread count, the conv blocks' activation, pooling and
batch norm, forward+backward or forward only, a batch size bucket), `KernelGuard.decide` times
the fused conv blocks against a copy of the model's own layers, alternating the two for
about a second, and keeps the kernel only where its median is at least 10% faster. The
decision is cached as JSON beside the library (one file per build: another compiler or
-march measures again); every decision this process made or read is in `kernel_report()`,
which a run records in its config.json.

LENET_NATIVE=1 skips the guard (always the kernel); LENET_NATIVE=0 turns the kernel off.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.atomic import write_text
from . import build, lenet5

MARGIN = 0.909  # the kernel's time must be at most this share of PyTorch's (>= 10% faster)
BUDGET_S = 1.0  # measuring time per new setting, about
MIN_ROUNDS, MAX_ROUNDS = 3, 30


@dataclass(frozen=True)
class Decision:
    use_kernel: bool
    why: str
    fused_ms: float | None = None  # medians of forward (+ backward) per call
    torch_ms: float | None = None
    rounds: int = 0
    source: str = "measured"  # "measured" now, "cache" (an earlier process) or "forced"


def bucket(n: int) -> str:
    """Batch sizes that time alike share a decision: powers of two, 513 and up as one."""
    if n > 512:
        return "513+"
    high = 1 << max(n - 1, 0).bit_length()
    return str(n) if high <= 2 else f"{high // 2 + 1}-{high}"


def setting(fused: tuple[str, str, bool], bn_training: bool, backward: bool,
            batch: int) -> str:
    """The decision's key, readable: e.g. 'torch 2.13.0, 2 threads, sigmoid/avg,
    forward+backward, batch 65-128'."""
    blocks = "/".join(fused[:2])
    if fused[2]:
        blocks += " + batch norm (" + ("batch" if bn_training else "running") + " statistics)"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {blocks}, "
            f"{'forward+backward' if backward else 'forward'}, batch {bucket(batch)}")


def measure(fused: Callable[[], object], reference: Callable[[], object], *,
            timer: Callable[[], float] = time.perf_counter,
            budget_s: float = BUDGET_S) -> tuple[float, float, int]:
    """(median seconds of `fused`, of `reference`, rounds): one warm-up call of each, then
    rounds of one call each, the order swapped every round, for about `budget_s`."""
    fused()
    reference()
    times: tuple[list[float], list[float]] = ([], [])
    start = timer()
    for r in range(MAX_ROUNDS):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = timer()
            (fused, reference)[i]()
            times[i].append(timer() - t0)
        if r + 1 >= MIN_ROUNDS and timer() - start >= budget_s:
            break
    return statistics.median(times[0]), statistics.median(times[1]), len(times[0])


class KernelGuard:
    """Decisions per setting: made once by measuring, cached in the JSON file at `path`."""

    def __init__(self, path: Path | None, timer: Callable[[], float] = time.perf_counter,
                 budget_s: float = BUDGET_S, forcible: bool = True,
                 names: tuple[str, str, str] = ("fused", "PyTorch", "PyTorch's layers run")
                 ) -> None:
        self.path = path  # None: nothing is cached on disk
        self.timer, self.budget_s = timer, budget_s
        self.forcible = forcible  # LENET_NATIVE=0/1 decides without measuring
        self.names = names  # the contenders' names in `why`, and what runs when the first loses
        self.decisions: dict[str, Decision] = {}  # made or read by this process
        self._lock = threading.Lock()  # two threads measuring at once would time each other

    def cached(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text()) if self.path else {}
            return data["decisions"] if isinstance(data.get("decisions"), dict) else {}
        except (OSError, ValueError, AttributeError):
            return {}

    def decide(self, key: str, contenders: Callable[[], tuple[Callable[[], object],
                                                               Callable[[], object]]]
               ) -> Decision:
        """The decision for `key`: this process's, else the cached one, else measured now
        by timing the two calls `contenders()` gives (fused, reference)."""
        with self._lock:
            mode = build.mode() if self.forcible else "auto"  # (it may change at run time)
            if mode != "auto":
                on = mode == "on"
                decision = Decision(on, f"{build.MODE_ENV}={int(on)} "
                                    + ("forces the kernel" if on else "turns the kernel off"),
                                    source="forced")
            elif key in self.decisions and self.decisions[key].source != "forced":
                return self.decisions[key]
            elif key in (known := self.cached()):
                decision = _from_json(known[key])
            else:
                # The contenders may draw from torch's global generator (a model's dropout in
                # training mode): a run that measured must go on as one that read the cache.
                with torch.random.fork_rng(devices=[]):
                    decision = self._measure(*contenders())
                self._store(key, decision)
            self.decisions[key] = decision
            return decision

    def _measure(self, fused: Callable[[], object], reference: Callable[[], object]) -> Decision:
        t_fused, t_torch, rounds = measure(fused, reference, timer=self.timer,
                                           budget_s=self.budget_s)
        use = t_fused <= MARGIN * t_torch
        speedup = t_torch / t_fused if t_fused > 0 else float("inf")
        first, second, otherwise = self.names
        why = (f"{first} {t_fused * 1e3:.3g} ms vs {second} {t_torch * 1e3:.3g} ms "
               f"({speedup:.2f}x): " + ("at least 10% faster" if use
                                        else f"not 10% faster, {otherwise}"))
        return Decision(use, why, t_fused * 1e3, t_torch * 1e3, rounds)

    def _store(self, key: str, decision: Decision) -> None:
        if self.path is None:
            return
        known = self.cached()  # another process may have added settings since
        known[key] = {k: v for k, v in asdict(decision).items() if k != "source"}
        with contextlib.suppress(OSError):  # a read-only cache: the decision holds here only
            write_text(self.path, json.dumps({"decisions": known}, indent=1, sort_keys=True))


def _from_json(data: dict[str, Any]) -> Decision:
    fields = ("use_kernel", "why", "fused_ms", "torch_ms", "rounds")
    return Decision(**{k: data[k] for k in fields if k in data}, source="cache")


_guards: dict[str, KernelGuard] = {}


def current() -> KernelGuard:
    """The guard of the loaded kernel build (its file beside the library)."""
    origin = lenet5.built()
    path = origin.path.with_suffix(".guard.json") if origin and origin.path else None
    key = str(path)
    if key not in _guards:
        _guards[key] = KernelGuard(path)
    return _guards[key]


_memo: dict[tuple[Any, ...], Decision] = {}  # per-step lookups without building the key string


def decide(blocks: lenet5.Blocks, batch: int, backward: bool) -> Decision:
    """The guard's decision for `blocks` (the model's own layers: they are copied, never
    run) at `batch` images, with or without the backward pass."""
    fused = blocks.kind
    bn_training = blocks.bn1 is not None and blocks.bn1.training
    memo_key = (fused, bn_training, backward, bucket(batch), torch.get_num_threads(),
                build.mode())
    if memo_key not in _memo:
        _memo[memo_key] = current().decide(setting(fused, bn_training, backward, batch),
                                           lambda: contenders(blocks, batch, backward))
    return _memo[memo_key]


def forget() -> None:
    """Drop this process's decisions (the cached files stay): for tests."""
    _memo.clear()
    _guards.clear()


def contenders(blocks: lenet5.Blocks, batch: int,
               backward: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """Two calls doing the same work, fused and layer by layer, on copies of `blocks` (the
    model's gradients, statistics and RNG stay untouched)."""
    copied = copy.deepcopy(blocks)  # one copy of each layer, shared by both contenders
    layers = nn.Sequential(*copied.layers)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *lenet5.INPUT_SHAPE), generator=generator)
    grad = torch.randn((batch, *lenet5.OUTPUT_SHAPE), generator=generator)

    def step(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.set_grad_enabled(backward):
                layers.zero_grad(set_to_none=True)
                out = forward()
                if backward:
                    out.backward(grad)
        return run

    return step(lambda: copied(x)), step(lambda: layers(x))


def kernel_report() -> dict[str, Any]:
    """The kernel's state, JSON-able: mode, build (compiler, flags, ISA, files) or why there
    is none, and the guard's decisions (this process's, then those cached on disk)."""
    report: dict[str, Any] = {"mode": build.mode(), "available": lenet5.available()}
    state = lenet5.built()
    if state is not None:
        chain = state.toolchain
        report["build"] = {
            "compiler": chain.path, "compiler_version": chain.version_line,
            "march": chain.march, "flags": state.flags,
            "vector_width": lenet5.vector_width() or chain.vector_width(),
            "openmp": state.openmp, "library": str(state.path) if state.path else None,
            "log": str(state.log) if state.log else None,
            "failed_logs": [str(p) for p in state.failed], "cache_dir": str(build.cache_dir())}
    if not report["available"]:
        report["why_not"] = lenet5.why_not()
    guard = current()
    report["guard_file"] = str(guard.path) if guard.path else None
    report["decisions"] = {k: asdict(d) for k, d in guard.decisions.items()}
    report["other_cached_decisions"] = {k: v for k, v in guard.cached().items()
                                        if k not in guard.decisions}
    return report
