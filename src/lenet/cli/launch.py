"""`lenet train --nproc N` (and `lenet resume RUN --nproc N`): the same command started N
times on this machine by torch's elastic launcher, as `torchrun --standalone
--nproc-per-node N -m lenet ...` would (lenet/training/distributed.py does the rest)."""

from __future__ import annotations

import logging
import os
import signal

from ..base.device import available_cpus
from ..errors import LenetError


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` and `option=VALUE`."""
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == option:
            skip = True
        elif not token.startswith(option + "="):
            rest.append(token)
    return rest


def launch(nproc: int, argv: list[str]) -> int:
    """Run `lenet ARGV` (without --nproc) in `nproc` processes; their exit status."""
    if "LOCAL_RANK" in os.environ:  # started by torchrun already
        raise LenetError("--nproc inside torchrun: let torchrun start the processes "
                         "(--nproc-per-node), or use --nproc alone")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # One thread per process unless --threads says otherwise: N processes share the cores
    # (torchrun sets 1 and warns; this says it quietly, and fits more cores).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // nproc)))
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "--module", "lenet",
         *without_option(argv, "--nproc")])
    # The agent logs each failed process in a paragraph; lenet says it in one line below.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        _, first = e.get_first_failure()  # the others were stopped because of it
        if first.exitcode == 2:  # `lenet: error: ...`, said by the process itself
            return 2
        how = (f"signal {first.signal_name()}" if first.exitcode < 0
               else f"exit status {first.exitcode}")
        raise LenetError(f"process {first.local_rank} of {nproc} ended with {how}"
                         + (f": {first.message}" if first.message else "")
                         + "; its output is above") from None
    except SignalException as e:  # Ctrl-C: the launcher passed it on, the processes saved
        if e.sigval != signal.SIGINT:
            raise LenetError(f"stopped by {e.sigval.name}") from None
        return 130
    except Exception as e:  # the launcher itself: a rendezvous that failed, ...
        raise LenetError(f"could not start {nproc} processes: {type(e).__name__}: {e}") from e
    return 0
