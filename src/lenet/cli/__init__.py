"""The `lenet` command.

Every expected failure (bad option, missing data, unwritable directory, broken
file) ends with one clear `lenet: error: ...` message and exit status 2, never
a traceback. Each subcommand lives in the module of its area and is a thin
layer over a Python function of the package.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import LenetError, LenetWarning, ReportedElsewhere
from . import data, doctor, experiments, inspection, ood, serve, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lenet",
        description="Build, train, inspect and ship LeNet-family CNNs on Fashion-MNIST and MNIST.")
    parser.add_argument("--version", action="version", version=f"lenet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for area in (training, experiments, inspection, ood, data, doctor, serve):
        area.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `--nproc` starts it again
    try:
        with warnings.catch_warnings():
            show_notes()
            return args.handler(args)
    except ReportedElsewhere:  # another process (rank 0) printed the error
        return 2
    except LenetError as e:
        print(f"lenet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lenet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lenet ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a file lenet writes or reads: unwritable folder, full disk, ...
        print(f"lenet: error: {describe_os_error(e)}", file=sys.stderr)
        return 2


def show_notes() -> None:
    """The library's notes (LenetWarning), each time, as `lenet: note: ...` lines."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LenetWarning):
            print(f"lenet: note: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.simplefilter("always", LenetWarning)
    warnings.showwarning = show


def describe_os_error(e: OSError) -> str:
    """'runs/x/ood.json: Permission denied', from what the operating system said."""
    if e.filename is None:
        return e.strerror or str(e)
    return f"{e.filename}: {e.strerror or e}"
