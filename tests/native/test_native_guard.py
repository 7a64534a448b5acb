"""The guard (lenet/native/guard.py): the fused kernel only where it measured >= 10% faster,
decided once per setting and cached; forced and disabled modes; what runs record. Timings
here come from a fake clock or a stubbed measurement: never from the machine's load."""

import json

import pytest
import torch
from conftest import kernel_built

from lenet.models.config import MODELS
from lenet.models.network import build_model
from lenet.models.settings import with_settings
from lenet.native import guard, lenet5
from lenet.native.fastpath import kernel_path, native_choice, prepare_model
from lenet.run import shortcuts as runner
from lenet.run.console import Console
from lenet.training.config import TrainConfig

CPU = torch.device("cpu")


class Clock:
    """A fake perf_counter: calls made with `step` advance it by their given seconds."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, []

    def __call__(self) -> float:
        return self.now

    def step(self, name: str, seconds: float):
        def run() -> None:
            self.calls.append(name)
            self.now += seconds
        return run


@pytest.fixture
def fresh(monkeypatch):
    """The guard decides (LENET_NATIVE unset), with no decision of this process in memory."""
    monkeypatch.delenv("LENET_NATIVE", raising=False)
    guard.forget()
    yield
    guard.forget()


def test_measure_alternates_and_takes_medians():
    clock = Clock()
    fused, torch_ms, rounds = guard.measure(clock.step("fused", 0.010), clock.step("torch", 0.020),
                                            timer=clock, budget_s=1.0)
    assert (fused, torch_ms) == pytest.approx((0.010, 0.020))
    assert clock.calls[:6] == ["fused", "torch", "fused", "torch", "torch", "fused"]
    assert rounds == guard.MAX_ROUNDS  # 30 rounds of 30 ms: about the 1 s budget
    clock = Clock()
    assert guard.measure(clock.step("f", 1.0), clock.step("t", 1.0), timer=clock,
                         budget_s=1.0)[2] == guard.MIN_ROUNDS  # slow calls: a few rounds


def contenders(clock: Clock, fused_s: float, torch_s: float, made: list):
    def make():
        made.append(1)
        return clock.step("fused", fused_s), clock.step("torch", torch_s)
    return make


def test_decisions_need_ten_percent_are_cached_and_reused(tmp_path, fresh):
    clock, made = Clock(), []
    path = tmp_path / "lenet5-x.guard.json"
    g = guard.KernelGuard(path, timer=clock)
    yes = g.decide("A", contenders(clock, 0.0090, 0.0100, made))  # 0.90 of PyTorch's time
    no = g.decide("B", contenders(clock, 0.0095, 0.0100, made))  # only 5% faster
    assert yes.use_kernel and yes.source == "measured" and "at least 10% faster" in yes.why
    assert yes.fused_ms == pytest.approx(9.0) and yes.torch_ms == pytest.approx(10.0)
    assert not no.use_kernel and "PyTorch's layers run" in no.why
    assert g.decide("A", contenders(clock, 1.0, 0.001, made)) is yes  # decided: not again
    assert len(made) == 2
    stored = json.loads(path.read_text())["decisions"]
    assert set(stored) == {"A", "B"} and stored["B"]["use_kernel"] is False

    later = guard.KernelGuard(path, timer=clock)  # another process with the same build
    cached = later.decide("B", contenders(clock, 0.001, 1.0, made))
    assert cached.source == "cache" and not cached.use_kernel and len(made) == 2
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files

    path.write_text("{not json")  # a damaged file: measured again, then rewritten
    again = guard.KernelGuard(path, timer=clock)
    assert again.decide("A", contenders(clock, 1, 2, made)).use_kernel
    assert len(made) == 3 and "A" in json.loads(path.read_text())["decisions"]


def test_forced_mode_skips_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_NATIVE", "1")
    clock, made = Clock(), []
    g = guard.KernelGuard(tmp_path / "g.json", timer=clock)
    decision = g.decide("A", contenders(clock, 1.0, 0.001, made))
    assert decision.use_kernel and decision.source == "forced" and "LENET_NATIVE=1" in decision.why
    assert not made and not (tmp_path / "g.json").exists()
    monkeypatch.setenv("LENET_NATIVE", "0")  # switched while the kernel stays loaded
    off = g.decide("A", contenders(clock, 1.0, 0.001, made))
    assert not off.use_kernel and "turns the kernel off" in off.why and not made
    monkeypatch.delenv("LENET_NATIVE")  # a forced decision is not the guard's
    measured = g.decide("A", contenders(clock, 1.0, 0.001, made))
    assert measured.source == "measured" and not measured.use_kernel and len(made) == 1


def test_settings_name_what_the_decision_depends_on():
    assert [guard.bucket(n) for n in (1, 2, 3, 7, 64, 65, 128, 129, 512, 513, 5000)] == [
        "1", "2", "3-4", "5-8", "33-64", "65-128", "65-128", "129-256", "257-512", "513+",
        "513+"]
    key = guard.setting(("relu", "max", True), True, True, 100)
    assert key.startswith(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ")
    assert "relu/max + batch norm (batch statistics), forward+backward, batch 65-128" in key


def stub_measure(monkeypatch, fused_s: float, torch_s: float, ran: list):
    """guard.measure runs each contender once (they must work) and reports given times."""
    def fake(fused, reference, **kwargs):
        fused()
        reference()
        ran.append(1)
        return fused_s, torch_s, 3
    monkeypatch.setattr(guard, "measure", fake)


def test_the_model_follows_the_guard(tmp_path, fresh, monkeypatch):
    monkeypatch.setattr(guard, "current", lambda: shared)
    shared = guard.KernelGuard(tmp_path / "g.json")
    plain = build_model(MODELS["lenet5"], seed=0)
    fast = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    calls, ran = [], []
    kernel = lenet5.conv_blocks
    monkeypatch.setattr(lenet5, "conv_blocks", lambda *a, **k: calls.append(1) or kernel(*a, **k))

    # (each measurement calls the kernel once, on copies: `calls` counts those too)
    stub_measure(monkeypatch, 0.010, 0.009, ran)  # PyTorch faster: its layers run
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x))
    assert len(ran) == 1 and len(calls) == 1
    weights = [p.clone() for p in fast.parameters()]
    fast(x).sum().backward()  # forward+backward is its own setting, measured on copies
    assert len(ran) == 2 and len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(weights, fast.parameters(), strict=True))

    stub_measure(monkeypatch, 0.005, 0.010, ran)  # a new batch size bucket: kernel faster
    with torch.no_grad():
        fast(torch.rand(100, 1, 28, 28))
    assert len(ran) == 3 and len(calls) == 4
    with torch.no_grad():
        fast(torch.rand(7, 1, 28, 28))  # same bucket as 8: decided, PyTorch's layers
    assert len(ran) == 3 and len(calls) == 4
    decisions = json.loads((tmp_path / "g.json").read_text())["decisions"]
    assert len(decisions) == 3 and sum(d["use_kernel"] for d in decisions.values()) == 1


def test_the_guard_does_not_touch_the_global_rng(tmp_path, fresh, monkeypatch):
    monkeypatch.setattr(guard, "current", lambda: guard.KernelGuard(None, budget_s=0.0))
    fast = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    state = torch.get_rng_state()
    guard.decide(kernel_path(fast).kernel, 16, backward=True)
    assert torch.equal(state, torch.get_rng_state())  # training results stay reproducible


@pytest.mark.slow
def test_runs_record_which_path_trained_them(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_NATIVE", "1")
    guard.forget()
    result = runner.train(TrainConfig(dataset="synthetic", epochs=1, batch_size=50,
                                      device="cpu", out_dir=str(tmp_path)),
                          console=Console(progress=False))
    native = json.loads((result.run_dir / "config.json").read_text())["native"]
    assert native["path"] == "fused kernel" and "LENET_NATIVE=1" in native["why"]
    assert native["kernel"]["available"] and native["kernel"]["build"]["flags"]
    assert any("batch 33-64" in k for k in native["kernel"]["decisions"])


def test_native_choice_says_why_not(fresh):
    tanh = build_model(with_settings(MODELS["lenet5"], {"activation": "tanh"}), seed=0)
    prepare_model(tanh, CPU)
    assert "not LeNet-5's conv blocks" in native_choice(tanh, 128)["why"]
    model = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    bf16 = native_choice(model, 128, "bf16")
    assert bf16["path"] == "pytorch" and "autocast" in bf16["why"]
    json.dumps(bf16)  # the report is JSON-able


def test_kernel_report_is_json(fresh):
    report = guard.kernel_report()
    json.loads(json.dumps(report))
    assert report["mode"] == "auto" and report["available"] == lenet5.available()
    if report["available"]:
        build = report["build"]
        assert build["vector_width"] in (1, 4, 8, 16) and build["compiler_version"]
        assert report["guard_file"].endswith(".guard.json")


def test_lenet_doctor_prints_the_kernels_state(capsys, monkeypatch):
    from lenet.cli import main

    monkeypatch.setenv("LENET_NATIVE", "1")
    assert main(["doctor", "--measure"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kernel:      ") and "torch:       " in out and "device:" in out
    if kernel_built():  # else PyTorch's layers: what the rest checks
        assert "ISA level:   -march=" in out and "floats a vector" in out and "build log:" in out
        assert "lenet5, batch 128, training: fused kernel: LENET_NATIVE=1 forces" in out
        # the small kernels, forced on: compiled where the kernel is
        assert "OOD k-NN:    compiled, " in out and "OOD pixels:  compiled" in out
        assert "DDP mean:    compiled: " in out
        assert "SGD step:    compiled (one pass a tensor; PyTorch's floats to the bit" in out
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["native"]["mode"] == "on" and report["threads"] == torch.get_num_threads()
    monkeypatch.setenv("LENET_NATIVE", "0")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "OOD k-NN:    off (LENET_NATIVE=0): PyTorch's" in out
    assert "OOD pixels:  off (LENET_NATIVE=0): numpy's" in out
    assert "SGD step:    off (LENET_NATIVE=0): PyTorch's foreach step" in out
    monkeypatch.setenv("LENET_NATIVE", "maybe")
    assert main(["doctor"]) == 2
    assert capsys.readouterr().err.startswith("lenet: error: LENET_NATIVE='maybe'")


@pytest.mark.data
@pytest.mark.slow
def test_the_variants_benchmark_runs(tmp_path, capsys):
    from lenet.bench import native_variants

    out = tmp_path / "variants.json"
    assert native_variants.main(["--variants", "native,x86-64-v9", "--steps", "2",
                                 "--rounds", "1", "--budget", "0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("CPU: ") and "x86-64-v9  skipped: " in text
    native, bad = json.loads(out.read_text())
    assert "skipped" in bad
    if kernel_built():  # else PyTorch's layers: what the rest checks
        assert len(native["blocks"]) == 4 and all(b["fused_ms"] > 0 for b in native["blocks"])
        assert len(native["epoch"]["kernel_examples_per_sec"]) == 1
        assert len(native["epoch"]["default_examples_per_sec"]) == 1
        assert "native " in text and " forced " in text and " default " in text
