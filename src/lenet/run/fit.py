"""`Run.fit`: a training run's four phases, set-up -> epochs -> evaluation -> finish.

The phases compute; everything they produce goes to sinks (lenet/run/sinks.py):
files, terminal, TensorBoard. Ctrl-C, a non-finite loss and resuming are
handled here and nowhere else:

- Ctrl-C (`StopRequest`): the first asks training to stop after the current
  step; the checkpoint then holds the epoch's progress and `lenet resume RUN`
  continues bit-identically. A second Ctrl-C interrupts at once.
- A non-finite loss: training stops, the last good checkpoint is kept, the
  curves are drawn, and a `TrainingError` says what to try.
- Resuming: the checkpoint restores model, optimizer, scheduler, loss scaler,
  epoch progress and the RNG states, in the same order as a fresh run draws them.

Random numbers: the model's initial weights (Xavier, `init_weights`) and
dropout draw from torch's global RNG, so the run seeds it, as the book's
figures need (the book recipe with seed 0 ends at test accuracy 0.7374). That
seeding happens inside `torch.random.fork_rng`: the caller's RNG state is the
same after `fit` as before.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from ..base.device import describe, pick_device, set_threads
from ..data import sources
from ..data.loader import make_loaders
from ..errors import ReportedElsewhere, TrainingError
from ..models.network import build_model
from ..native.fastpath import evaluation_batch, native_choice, prepare_model
from ..training import batch_norm, checkpoint, ddp, distributed
from ..training.checkpoint import Payload
from ..training.config import TrainConfig
from ..training.freeze import check_processes, freezer
from ..training.loop import (
    EpochTotals,
    EvalResult,
    HistoryRow,
    NonFiniteLossError,
    evaluate,
    train_one_epoch,
)
from ..training.optim import build_optimizer, build_scheduler
from .directory import RunDir, environment
from .events import EpochEnd, OnlyIf, Progress, RunFinish, RunStart, RunStop, Sink, Sinks
from .resume import run_model_config
from .stop import StopRequest
from .warmup import import_in_background

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunResult:
    run_dir: Path
    history: list[HistoryRow]
    completed: bool  # False when stopped early by Ctrl-C
    examples_per_sec: float
    device: str
    final: dict[str, Any] = field(default_factory=dict)


def fit(run_dir: RunDir, config: TrainConfig, payload: Payload | None,
        sinks: list[Sink], stop: StopRequest | None, background_imports: bool) -> RunResult:
    """Train a new run, or resume one from its checkpoint's `payload`, to `config.epochs`.
    Under torchrun every process calls this; rank 0 alone tells the sinks (distributed.py)."""
    world = distributed.world()
    device = distributed.device_for(pick_device(config.device), world)
    if world.distributed:
        sinks = [OnlyIf(sink, world.main) for sink in sinks]
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" or (
        torch.cuda.is_available()
        and torch.cuda.is_initialized()) else []  # type: ignore[no-untyped-call]  # torch's
    events = Sinks(sinks)
    try:
        with torch.random.fork_rng(devices=cuda):  # the run's seeding stays inside
            return _Fit(run_dir, config, payload, device, events, stop or StopRequest(),
                        background_imports, world).run()
    finally:
        events.close()


class _Fit:
    """One call of `fit`: the state the phases share."""

    def __init__(self, run_dir: RunDir, config: TrainConfig, payload: Payload | None,
                 device: torch.device, sinks: Sinks, stop: StopRequest,
                 background_imports: bool, world: distributed.World) -> None:
        self.run_dir, self.config, self.payload = run_dir, config, payload
        self.device, self.sinks, self.stop, self.world = device, sinks, stop, world
        self.background_imports = background_imports

    def run(self) -> RunResult:
        self.started = time.perf_counter()  # elapsed times include data loading and set-up
        self.set_up()
        completed = self.epochs()
        return self.finish(completed)

    def set_up(self) -> None:
        config, device = self.config, self.device
        if self.background_imports:
            import_in_background()
        set_threads(config.threads)
        torch.manual_seed(config.seed)  # the order of draws below is what results depend on
        dataset = sources.load(config.dataset, config.data_dir)
        self.loaders = make_loaders(dataset, device, batch_size=config.batch_size,
                                    seed=config.seed, val_split=config.val_split,
                                    resize=config.resize, augment=config.augment,
                                    eval_batch_size=config.eval_batch_size or 1024,
                                    ood_holdout=config.ood_holdout)
        # reading the data into memory: a record's clock starts after it (benchmarks/records.py)
        self.data_seconds = time.perf_counter() - self.started
        world = self.world
        distributed.check_batch(config.batch_size, self.loaders.train.num_examples, world)
        check_processes(config.freeze_first_block, world.size)
        for batches in (self.loaders.train, self.loaders.eval):
            batches.shard(world.rank, world.size)  # each rank its share of every batch
        self.eval_name = self.loaders.eval_name
        self.model_config = run_model_config(config, dataset.spec.classes,
                                                 dataset.train.images.shape[1:], self.payload)
        model, global_bn = batch_norm.sync_batch_norm(build_model(self.model_config),
                                                      device, world)
        # One process: the layout guard may pick channels-last. Several: no timing decides
        # (ranks could decide apart, and DDP's buckets follow each rank's layout).
        model = self.model = prepare_model(
            model, device, None if world.distributed else config.batch_size,
            config.conv_precision)
        if config.eval_batch_size is None:  # by the path the model now has
            self.loaders.eval.batch_size = evaluation_batch(model, device)
        self.trained, gradient_sum = ddp.wrap(model, device, world)  # DDP: torchrun
        self.optimizer = build_optimizer(model.parameters(), config)
        self.scheduler = build_scheduler(self.optimizer, config, len(self.loaders.train))
        self.scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
        self.history: list[HistoryRow] = []
        self.start_epoch, self.totals = 0, cast(EpochTotals | None, None)
        if self.payload is not None:
            self.restore(self.payload)
        distributed.rank_seed(config.seed, world, self.start_epoch,
                              self.totals.steps if self.totals else 0)
        self.classes, self.dataset_name = list(dataset.classes), dataset.spec.name
        self.train_split = dataset.train  # all of it: the OOD fit picks its own images
        self.device_name = describe(device)
        record = self.record(dataset, global_bn, gradient_sum)
        self.sinks.emit("on_start", RunStart(
            self.run_dir, config, record, list(self.history), self.start_epoch,
            self.payload is not None, self.eval_name, dataset.spec.title,
            len(self.loaders.train)))

    def record(self, dataset: sources.Dataset, global_bn: str | None,
               gradient_sum: str | None) -> dict[str, Any]:
        """What config.json holds: the resolved configuration, the data, where it runs."""
        config, world, model = self.config, self.world, self.model
        native = native_choice(model, config.batch_size // world.size, config.precision)
        if global_bn and self.device.type == "cpu":  # the kernel's statistics: one process's
            native = {"path": "pytorch", "why": global_bn}
        loaders = self.loaders
        return {"train": config.to_dict(), "model": self.model_config.to_dict(),
                "dataset": {"name": dataset.spec.name, "source": str(dataset.source),
                            "train_examples": loaders.train.num_examples,
                            f"{self.eval_name}_examples": loaders.eval.num_examples,
                            "classes": list(dataset.classes)},
                "parameters": model.num_parameters, "device": self.device_name,
                "environment": environment(),
                # which path trains the conv blocks and why (the guard's timings)
                "native": native,
                **({"distributed": {**world.describe(), "batch_norm": global_bn,
                                     "gradient_sum": gradient_sum}}
                   if world.distributed else {}), "world_size": world.size}

    def restore(self, payload: Payload) -> None:
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.scheduler.load_state_dict(payload["scheduler_state"])
        scaler_state = payload.get("scaler_state")
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        self.history, self.start_epoch = payload["history"], payload["epoch"]
        partial = payload.get("partial")  # (rank 0 carries the sums so far)
        self.totals = (EpochTotals.from_state(partial, self.device, sums=self.world.main)
                       if partial else None)
        checkpoint.restore_rng(payload["rng"])

    def state(self, epoch: int, partial: EpochTotals | None) -> Payload:
        """The checkpoint's contents at this moment (the RNG states included)."""
        config = self.config
        return {
            "model_name": config.model, "model_config": self.model_config.to_dict(),
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(), "train_config": config.to_dict(),
            "epoch": epoch, "partial": partial.to_state() if partial else None,
            "history": self.history,
            "classes": self.classes, "dataset": self.dataset_name,
            "rng": checkpoint.capture_rng(),
            "scaler_state": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def epochs(self) -> bool:
        """Train and evaluate epoch after epoch; False when stopped early by Ctrl-C."""
        config, train = self.config, self.loaders.train
        with self.stop:
            for epoch in range(self.start_epoch, config.epochs):
                totals = self.train_epoch(epoch)
                if totals.steps < len(train):  # stopped mid-epoch by Ctrl-C
                    self.stopped(lambda e=epoch, t=totals: self.state(e, t))
                    return False
                result = self.evaluate(epoch, totals)  # None: --eval-every skipped it
                interrupted = self.world.any(self.stop.requested) and epoch + 1 < config.epochs
                target = config.target_accuracy
                reached = (target if not interrupted and target and result is not None
                           and result.accuracy >= target else None)
                self.sinks.emit("on_epoch", EpochEnd(
                    self.history[-1], self.history,
                    functools.partial(self.state, epoch + 1, None), self.eval_name, reached))
                if interrupted:
                    self.stopped(None)
                    return False
                if reached is not None:
                    break
        return True

    def train_epoch(self, epoch: int) -> EpochTotals:
        total = len(self.loaders.train)

        def show(t: EpochTotals) -> None:
            self.sinks.emit("on_step", Progress(epoch, self.config.epochs, t.steps, total,
                                                t.loss))

        done = self.totals.steps if self.totals else 0
        self.sinks.emit("on_step", Progress(epoch, self.config.epochs, done, total, None))
        on_step = freezer(self.model, self.config.freeze_first_block, self.config.epochs,
                          total, epoch, done)
        try:
            totals = train_one_epoch(
                self.trained, self.loaders.train, self.optimizer, self.scheduler, epoch=epoch,
                clip_grad=self.config.clip_grad, totals=self.totals, should_stop=self.stop,
                on_progress=show, autocast_dtype=AUTOCAST[self.config.precision],
                scaler=self.scaler, label_smoothing=self.config.label_smoothing,
                world=self.world, on_step=on_step)
        except NonFiniteLossError as e:
            self.failed(e)
        finally:
            self.sinks.emit("on_step", Progress(epoch, self.config.epochs, 0, total, None,
                                                done=True))
        self.totals = None
        return totals

    def evaluate(self, epoch: int, totals: EpochTotals) -> EvalResult | None:
        """Evaluate after this epoch if --eval-every says so (and always after the last);
        the epoch's history row either way."""
        eval_start = time.perf_counter()
        result = None
        if (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == self.config.epochs:
            batch_norm.sync_buffers(self.model, self.world)  # rank 0's batch-norm statistics
            result = evaluate(self.model, self.loaders.eval, self.world, tta=self.config.tta)
        now = time.perf_counter()
        self.history.append(_row(epoch + 1, totals, result, self.eval_name,
                                 self.optimizer.param_groups[0]["lr"], now - eval_start,
                                 now - self.started))
        return result

    def stopped(self, state: Any) -> None:
        self.sinks.emit("on_stop", RunStop(
            "interrupted", self.history, state,
            f"stopped; progress saved in {self.run_dir.checkpoint}. "
            f"Resume with: lenet resume {self.run_dir.path}"))

    def failed(self, error: NonFiniteLossError) -> None:
        kept = (f"the last good checkpoint (after epoch {len(self.history)}) is kept in "
                f"{self.run_dir.checkpoint}" if self.history else "no checkpoint was written")
        message = (f"{error}; training stopped and {kept}. Try a lower --lr "
                   f"(now {self.config.lr}) or --clip-grad.")
        self.sinks.emit("on_stop", RunStop("failed", self.history, None, message))
        if not self.world.main:  # every rank stops here; rank 0 says why
            raise ReportedElsewhere(message) from error
        raise TrainingError(message) from error

    def finish(self, completed: bool) -> RunResult:
        history = self.history
        train_seconds = sum(r["seconds"] for r in history)
        speed = (sum(r["train_examples"] for r in history) / train_seconds
                 if train_seconds else 0.0)
        if not completed:
            return RunResult(self.run_dir.path, history, False, speed, self.device_name)
        final = {**history[-1], "examples_per_sec_overall": speed, "device": self.device_name,
                 "world_size": self.world.size,
                 "train_seconds": train_seconds,
                 "wall_seconds_total": sum(r["wall_seconds"] for r in history),
                 # this process's data loading, and from the data in memory to the last
                 # evaluation (set-up, every epoch and evaluation, the checkpoints between)
                 "data_seconds": self.data_seconds,
                 "clock_seconds": history[-1]["elapsed_seconds"] - self.data_seconds,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        # The out-of-distribution detectors, fitted on the training images still in memory
        # when a sink asks (sinks.OODSink; about half a second).
        from ..ood.runs import fit_after_training  # matplotlib et al.: imported by now

        ood = functools.partial(fit_after_training, self.model, self.classes,
                                self.train_split.images, self.train_split.labels,
                                self.config.to_dict(), len(history))
        self.sinks.emit("on_finish", RunFinish(final, history, self.eval_name, speed,
                                               self.device.type, ood))
        return RunResult(self.run_dir.path, history, True, speed, self.device_name, final)


def _row(epoch: int, totals: EpochTotals, result: EvalResult | None, eval_name: str,
         lr: float, eval_seconds: float, elapsed: float) -> HistoryRow:
    # the evaluation's pair is named by the split (test_* or val_*): a TypedDict of both;
    # an epoch --eval-every skips has neither
    evaluated = {} if result is None else {f"{eval_name}_loss": result.loss,
                                           f"{eval_name}_acc": result.accuracy}
    row = {"epoch": epoch, "train_loss": totals.loss, "train_acc": totals.accuracy,
           **evaluated, "lr": lr, "train_examples": totals.examples,
           "examples_per_sec": totals.examples_per_sec, "seconds": totals.seconds,
           "wall_seconds": totals.seconds + eval_seconds,
           "elapsed_seconds": elapsed}  # since this process began the run (or resumed it)
    return cast(HistoryRow, row)
