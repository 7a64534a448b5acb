"""A training run from start to finish: data -> model -> training -> records.

`train(config)` starts a run in a new directory; `resume(run_dir)` continues
one from its checkpoint. Both go through `_run`, which wires the pieces
together and owns the run's side effects (files, terminal, Ctrl-C), so the
pieces themselves stay pure.
"""

from __future__ import annotations

import importlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from . import checkpoint, sources
from .config import TrainConfig
from .console import Console
from .device import describe, pick_device, set_threads
from .errors import ConfigError, TrainingError
from .fastpath import prepare_model
from .loader import make_loaders
from .models import ModelConfig, build_model, get_model_config, with_settings
from .optim import build_optimizer, build_scheduler
from .plots import plot_curves
from .rundir import RunDir, environment
from .training import EpochTotals, EvalResult, NonFiniteLossError, evaluate, train_one_epoch

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Options that may differ when a run is resumed: where it runs, not what it computes.
RESUMABLE_OVERRIDES = {"device", "threads", "data_dir", "epochs"}


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict[str, Any]]
    completed: bool  # False when stopped early by Ctrl-C
    examples_per_sec: float
    device: str
    final: dict[str, Any] = field(default_factory=dict)


class StopRequest:
    """First Ctrl-C asks training to stop after the current step (and save);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(config: TrainConfig, *, console: Console | None = None,
          stop: StopRequest | None = None) -> RunResult:
    """Train a model as `config` says, recording the run in a new directory."""
    run = RunDir.create(config.out_dir, config.name, default_stem=config.model)
    return _run(config, run, None, console or Console(), stop)


def resume(run_dir: str | Path, *, console: Console | None = None,
           stop: StopRequest | None = None, **overrides: Any) -> RunResult:
    """Continue an interrupted run; `overrides` may change only RESUMABLE_OVERRIDES."""
    run = RunDir(run_dir)
    payload = checkpoint.load(run.checkpoint)
    saved = TrainConfig.from_dict(payload["train_config"])
    changed = {k for k, v in overrides.items() if v is not None and v != getattr(saved, k)}
    if changed - RESUMABLE_OVERRIDES:
        fixed = ", ".join(sorted(changed - RESUMABLE_OVERRIDES))
        allowed = ", ".join(sorted(RESUMABLE_OVERRIDES))
        raise ConfigError(f"cannot change {fixed} when resuming; only {allowed} may change")
    if "epochs" in changed and saved.schedule != "constant":
        raise ConfigError(f"cannot change --epochs of a run with the {saved.schedule!r} schedule: "
                          "its learning rate depends on the total length")
    config = saved.replace(**{k: overrides[k] for k in changed})
    if payload["epoch"] >= config.epochs:
        raise ConfigError(f"{run.path} already finished {payload['epoch']} of {config.epochs} "
                          "epochs; pass a larger --epochs to train on")
    return _run(config, run, payload, console or Console(), stop)


def _run(config: TrainConfig, run: RunDir, payload: dict[str, Any] | None, console: Console,
         stop: StopRequest | None) -> RunResult:
    started = time.perf_counter()  # elapsed times include data loading and set-up
    _import_in_background()
    device = pick_device(config.device)
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    dataset = sources.load(config.dataset, config.data_dir)
    loaders = make_loaders(dataset, device, batch_size=config.batch_size, seed=config.seed,
                           val_split=config.val_split, resize=config.resize,
                           augment=config.augment, eval_batch_size=config.eval_batch_size)
    model_config = _model_config(config, dataset.spec.classes, dataset.train.images.shape[1:],
                                 payload)
    model = prepare_model(build_model(model_config), device)
    optimizer = build_optimizer(model.parameters(), config)
    scheduler = build_scheduler(optimizer, config, len(loaders.train))
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    history: list[dict[str, Any]] = []
    start_epoch, totals = 0, None
    if payload is not None:
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        if scaler is not None and payload.get("scaler_state"):
            scaler.load_state_dict(payload["scaler_state"])
        history, start_epoch = payload["history"], payload["epoch"]
        totals = _totals_from(payload.get("partial"), device)
        checkpoint.restore_rng(payload["rng"])

    device_name = describe(device)
    record = {"train": config.to_dict(), "model": model_config.to_dict(),
              "dataset": {"name": dataset.spec.name, "source": str(dataset.source),
                          "train_examples": loaders.train.num_examples,
                          f"{loaders.eval_name}_examples": loaders.eval.num_examples,
                          "classes": list(dataset.classes)},
              "parameters": model.num_parameters, "device": device_name,
              "environment": environment()}
    run.write_json(RunDir.CONFIG, record)
    action = f"resuming at epoch {start_epoch + 1}" if payload else "training"
    console.print(f"{action} {config.model} ({model.num_parameters:,} parameters) on "
                  f"{dataset.spec.title} from {dataset.source} on {device_name}")
    console.print(f"run directory: {run.path}")
    console.table_header(loaders.eval_name)
    for row in history:
        console.table_row(row, loaders.eval_name)

    def save(epoch: int, partial: EpochTotals | None) -> None:
        checkpoint.save(run.checkpoint, {
            "model_name": config.model, "model_config": model_config.to_dict(),
            "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "train_config": config.to_dict(),
            "epoch": epoch, "partial": _partial_state(partial), "history": history,
            "classes": list(dataset.classes), "dataset": dataset.spec.name,
            "rng": checkpoint.capture_rng(),
            "scaler_state": scaler.state_dict() if scaler is not None else None,
        })

    board = _tensorboard(run) if config.tensorboard else None
    stop = stop or StopRequest()
    completed = True
    with stop:
        for epoch in range(start_epoch, config.epochs):
            bar = console.bar(len(loaders.train), totals.steps if totals else 0,
                              f"epoch {epoch + 1}/{config.epochs}")

            def show(t: EpochTotals, bar: Any = bar) -> None:
                bar.update(t.steps - bar.n)
                bar.set_postfix(loss=f"{t.loss:.4f}", refresh=False)

            try:
                totals = train_one_epoch(model, loaders.train, optimizer, scheduler, epoch=epoch,
                                         clip_grad=config.clip_grad, totals=totals,
                                         should_stop=stop, on_progress=show,
                                         autocast_dtype=AUTOCAST[config.precision],
                                         scaler=scaler)
            except NonFiniteLossError as e:
                _finish_plot(run, history, loaders.eval_name, config)
                kept = (f"the last good checkpoint (after epoch {len(history)}) is kept in "
                        f"{run.checkpoint}" if history else "no checkpoint was written")
                raise TrainingError(f"{e}; training stopped and {kept}. Try a lower --lr "
                                    f"(now {config.lr}) or --clip-grad.") from e
            finally:
                bar.close()
            if totals.steps < len(loaders.train):  # stopped mid-epoch by Ctrl-C
                save(epoch, totals)
                completed = False
                break
            eval_start = time.perf_counter()
            result = evaluate(model, loaders.eval)
            now = time.perf_counter()
            history.append(_row(epoch + 1, totals, result, loaders.eval_name,
                                optimizer.param_groups[0]["lr"], now - eval_start, now - started))
            totals = None
            save(epoch + 1, None)
            run.write_metrics(history)
            console.table_row(history[-1], loaders.eval_name)
            if board is not None:
                for key, value in history[-1].items():
                    if key != "epoch":
                        board.add_scalar(key, value, epoch + 1)
                board.flush()
            if stop.requested and epoch + 1 < config.epochs:
                completed = False
                break
            if config.target_accuracy and result.accuracy >= config.target_accuracy:
                console.print(f"reached {loaders.eval_name} accuracy {result.accuracy:.4f} >= "
                              f"{config.target_accuracy} after epoch {epoch + 1}: stopping")
                break

    _finish_plot(run, history, loaders.eval_name, config)
    train_seconds = sum(r["seconds"] for r in history)
    speed = sum(r["train_examples"] for r in history) / train_seconds if train_seconds else 0.0
    if not completed:
        console.print(f"stopped; progress saved in {run.checkpoint}. "
                      f"Resume with: lenet train --resume {run.path}")
        return RunResult(run.path, history, False, speed, device_name)
    final = {**history[-1], "examples_per_sec_overall": speed, "device": device_name,
             "train_seconds": train_seconds,
             "wall_seconds_total": sum(r["wall_seconds"] for r in history),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run.write_json(RunDir.RESULTS, final)
    console.book_lines(history[-1], loaders.eval_name, speed, device.type)
    console.print(f"results in {run.path}: {RunDir.METRICS}, {RunDir.CURVES}, "
                  f"{checkpoint.FILENAME}, {RunDir.RESULTS}")
    return RunResult(run.path, history, True, speed, device_name, final)


# Slow first imports that a run needs later: torch's optimizers import torch._dynamo at the
# first optimizer (about 2 s), and the curves at the end need matplotlib (about 1 s).
LATER_IMPORTS = ("torch._dynamo", "matplotlib.figure", "matplotlib.backends.backend_agg")


def _import_in_background() -> None:
    """Start those imports on a thread: data loading (zlib, MD5, numpy: the GIL released)
    and training (kernels without the GIL) overlap them, instead of waiting for them. An
    import that fails here fails again where it is needed, with its real error."""
    def run() -> None:
        for name in LATER_IMPORTS:
            try:
                importlib.import_module(name)
            except Exception:  # reported where the module is used
                return

    threading.Thread(target=run, name="lenet-imports", daemon=True).start()


def _model_config(config: TrainConfig, classes: tuple[str, ...], image_size: tuple[int, int],
                  payload: dict[str, Any] | None) -> ModelConfig:
    if payload is not None:
        return ModelConfig.from_dict(payload["model_config"])
    model_config = with_settings(get_model_config(config.model), config.model_settings)
    size = config.resize or image_size
    return ModelConfig.from_dict({**model_config.to_dict(), "num_classes": len(classes),
                                  "input_size": tuple(size)})


def _row(epoch: int, totals: EpochTotals, result: EvalResult, eval_name: str,
         lr: float, eval_seconds: float, elapsed: float) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": totals.loss, "train_acc": totals.accuracy,
            f"{eval_name}_loss": result.loss, f"{eval_name}_acc": result.accuracy,
            "lr": lr, "train_examples": totals.examples,
            "examples_per_sec": totals.examples_per_sec, "seconds": totals.seconds,
            "wall_seconds": totals.seconds + eval_seconds,
            "elapsed_seconds": elapsed}  # since this process began the run (or resumed it)


def _partial_state(totals: EpochTotals | None) -> dict[str, Any] | None:
    if totals is None:
        return None
    return {"loss_sum": totals.loss_sum.cpu(), "correct": totals.correct.cpu(),
            "examples": totals.examples, "steps": totals.steps, "seconds": totals.seconds}


def _totals_from(state: dict[str, Any] | None, device: torch.device) -> EpochTotals | None:
    if state is None:
        return None
    return EpochTotals(state["loss_sum"].to(device), state["correct"].to(device),
                       state["examples"], state["steps"], state["seconds"])


def _tensorboard(run: RunDir) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: "
                          "pip install tensorboard") from None
    return SummaryWriter(log_dir=str(run.file("tensorboard")))


def _finish_plot(run: RunDir, history: list[dict[str, Any]], eval_name: str,
                 config: TrainConfig) -> None:
    if history:
        plot_curves(history, run.file(RunDir.CURVES), eval_name=eval_name,
                    title=f"{config.model} on {config.dataset}")
