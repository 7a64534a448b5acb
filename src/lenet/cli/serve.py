"""`lenet serve`: a trained run behind an HTTP API and a web page (lenet.serve)."""

from __future__ import annotations

import argparse
import os

from ..base.device import DEVICE_CHOICES
from ..predict.choices import BACKENDS
from .args import positive_float, positive_int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help = "serve a trained run: an HTTP API (/v1) and a page to draw, upload and look inside"
    p = commands.add_parser("serve", help=help, description=help + ". Every limit below "
                            "answers with a JSON error, never a crash.")
    p.add_argument("run", metavar="RUN", help="a run directory or checkpoint file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on [127.0.0.1: this machine only; 0.0.0.0 for "
                        "every interface, with a warning unless a token is set]")
    p.add_argument("--port", type=int, default=8000, help="[8000]")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="inference engine [auto: lenet's native kernel where it runs]")
    p.add_argument("--device", default="cpu", choices=DEVICE_CHOICES, help="[cpu]")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="PyTorch threads for the model; the event loop uses another core [1]")
    p.add_argument("--batch-threads", type=positive_int, default=None,
                   help="PyTorch threads for a batch request of 64 or more images [every CPU]")
    p.add_argument("--token", default=os.environ.get("LENET_TOKEN"),
                   help="require 'Authorization: Bearer TOKEN' on /v1/* [$LENET_TOKEN; none]")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable) [off]")
    p.add_argument("--max-bytes", type=positive_int, default=4 * 1024 * 1024,
                   help="largest request body, in bytes [4 MiB]")
    p.add_argument("--max-pixels", type=positive_int, default=16_000_000,
                   help="largest image, in pixels, checked before decoding [16,000,000]")
    p.add_argument("--max-batch", type=positive_int, default=1024,
                   help="most images in one /v1/predict/batch request [1024]")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="seconds to receive a request body, and again to answer it [30]")
    p.add_argument("--batch-wait", type=float, default=2.0, metavar="MS",
                   help="how long a single image may wait for others arriving with it, "
                        "to be classified in one batch [2 ms]")
    p.add_argument("--quiet", action="store_true", help="no log line per request")
    p.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..serve.limits import Limits
    from ..serve.server import serve
    from ..serve.service import Options

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    if not 0 <= args.batch_wait <= 100:
        raise ConfigError(f"--batch-wait must be between 0 and 100 ms, got {args.batch_wait}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"lenet serve needs the serve extra ({e.name} is missing): "
                          "pip install 'lenet[serve]'") from None
    limits = Limits(max_bytes=args.max_bytes, max_pixels=args.max_pixels,
                    max_batch=args.max_batch, timeout=args.timeout,
                    max_wait=args.batch_wait / 1000)
    options = Options(run=args.run, backend=args.backend, device=args.device,
                      threads=args.threads, batch_threads=args.batch_threads)
    serve(options, limits, host=args.host, port=args.port, token=args.token or None,
          cors=args.cors, log_requests=not args.quiet)
    return 0
