"""`lenet sweep FILE --ray [ADDRESS]`: a sweep's runs as Ray tasks, on a cluster or on a
Ray started on this machine for the sweep.

    [resources]        # in the sweep file, optional: what each run asks of the cluster
    cpus = 1           # CPUs per run (its torch threads) [1]
    gpus = 0           # GPUs per run (0.5: two runs share one) [0]

Each run is one task (`execute` from trial.py, as a pool worker runs it): it writes
its run directory in the same sweep folder, so the folder, the comparison files and
resuming are the process pool's. The folder must be on storage every node sees (a shared
file system) when the cluster has more than this machine. A run that fails (an error,
or its worker killed) is reported with its error (RUN/failed.txt) and the others go on;
Ray retries nothing (`max_retries=0`): rerunning the sweep retries it.

Ray is an optional extra (`pip install 'lenet[ray]'`); the process pool stays the default.
"""

from __future__ import annotations

import signal
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..base.device import available_cpus
from ..errors import ConfigError, LenetError
from .spec import PlannedRun
from .trial import execute, record_result

LOCAL = "local"  # `--ray` without an address: a Ray started here for the sweep
INSTALL = "pip install 'lenet[ray]'"


def resources(path: str | Path) -> tuple[float, float]:
    """(CPUs, GPUs) per run from the sweep file's [resources] table."""
    table = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("resources", {})
    if not isinstance(table, dict) or set(table) - {"cpus", "gpus"}:
        raise ConfigError(f"{path} [resources]: only cpus and gpus (per run) may be given")
    cpus, gpus = table.get("cpus", 1), table.get("gpus", 0)
    for key, value, least in (("cpus", cpus, 1), ("gpus", gpus, 0)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
            raise ConfigError(f"{path} [resources]: {key} must be a number >= {least}, "
                              f"got {value!r}")
    return float(cpus), float(gpus)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, an optional extra: {INSTALL}") from None
    return ray


def connect(ray: Any, address: str) -> bool:
    """Join the cluster at `address` ("auto": the one `ray start` runs here) or start a
    local Ray; False when this process is already connected (nothing to shut down)."""
    if ray.is_initialized():
        return False
    reachable(address)
    try:
        if address == LOCAL:
            ray.init(num_cpus=available_cpus(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ConfigError(f"--ray {address}: cannot join a Ray cluster there ({e}); start one "
                          "with `ray start --head`, or give --ray alone for a local one") from e
    return True


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a host:port (or ray://host:port) that nothing answers on, at once: Ray itself
    keeps retrying for minutes."""
    if address in (LOCAL, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except ValueError:
        raise ConfigError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT or auto") \
            from None
    except OSError as e:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); "
                          "start one with `ray start --head`, or give --ray alone for a "
                          "local one") from None


def trial(run: PlannedRun, threads: int) -> str:
    """One run inside a Ray worker: torch threads as the CPUs it was given."""
    import torch

    torch.set_num_threads(threads)
    return execute(run)


def outcome(ray: Any, ref: Any) -> str:
    """A finished task's status, or 'failed: why' (its error, or how its worker died)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the run raised: its own error
        cause = e.cause if e.cause is not None else e
        return f"failed: {cause}" if isinstance(cause, LenetError) else \
            f"failed: {type(cause).__name__}: {cause}"
    except ray.exceptions.TaskCancelledError:
        return "interrupted"
    except ray.exceptions.RayError as e:  # the worker died (killed, out of memory, ...)
        return f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}"


def run_on_ray(pending: list[PlannedRun], address: str, spec: Path, stop_marker: Path,
               say: Callable[[str], None], task: Callable[..., str] = trial) -> bool:
    """Run `pending` as Ray tasks; True when interrupted (Ctrl-C). `task(run, threads)`
    is what a worker runs (tests pass their own)."""
    cpus, gpus = resources(spec)
    ray = import_ray()
    started = connect(ray, address)
    interrupted = False
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        stop_marker.touch()  # runs not yet started return "not started"
        say("stopping: each running run saves after its current step...")
        for ref in waiting:
            ray.cancel(ref)  # a SIGINT in the worker: the run saves and stops

    try:
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(task)
        threads = max(1, int(cpus))
        say(f"Ray: {len(pending)} run(s) as tasks of {cpus:g} CPU(s)"
            + (f" and {gpus:g} GPU(s)" if gpus else "") + " each, on "
            + ("a local Ray" if address == LOCAL else f"the cluster at {address}"))
        refs = {remote.remote(run, threads): run for run in pending}
        waiting = list(refs)
        signal.signal(signal.SIGINT, on_interrupt)
        done = 0
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in finished:
                done += 1
                result = outcome(ray, ref)
                interrupted = interrupted or result == "interrupted"
                record_result(refs[ref], result)
                say(f"[{done}/{len(pending)}] {refs[ref].name}: {result}")
    finally:
        signal.signal(signal.SIGINT, previous)
        if started:
            ray.shutdown()
    stop_marker.unlink(missing_ok=True)
    return interrupted
