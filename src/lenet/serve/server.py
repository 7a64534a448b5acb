"""The app as `lenet serve` runs it: the routes behind the gate (token, limits, log,
metrics), CORS when asked, on uvicorn with its fastest loop and HTTP parser installed."""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .app import ROUTES, create_app
from .limits import Limits
from .metrics import Metrics
from .middleware import Gate
from .responses import error_response
from .service import Options, Service

LOOPBACK = ("localhost",)


def build(options: Options, limits: Limits | None = None, *, token: str | None = None,
          cors: Sequence[str] = (), log: Callable[[str], None] | None = None,
          service: Service | None = None) -> tuple[Any, Service]:
    """(the ASGI app, its service). Pass `service` to serve one already loaded (with
    `limits` of this app's own, the decoder's pixel limit aside)."""
    limits = limits or (service.limits if service else Limits())
    service = service or Service(options, limits, Metrics())
    routes = create_app(service, limits, secured=token is not None)
    app: Any = Gate(routes, limits=limits, metrics=service.metrics, routes=ROUTES, token=token,
                    log=log, direct=routes.state.direct, on_error=error_response)
    if cors:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(app, allow_origins=list(cors), allow_methods=["GET", "POST"],
                             allow_headers=["Authorization", "Content-Type"], max_age=600)
    return app, service


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def log_line(line: str) -> None:
    sys.stderr.write(f"lenet serve: {line}\n")


def serve(options: Options, limits: Limits, *, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, cors: Sequence[str] = (), log_requests: bool = True) -> None:
    """Serve until stopped (Ctrl-C). Loads the run on a thread: /healthz answers at once,
    /readyz once the model is warmed up."""
    import uvicorn

    from ..errors import ConfigError
    from ..training.checkpoint import resolve

    if not resolve(options.run).is_file():  # fails here, in one line, not in the loader
        raise ConfigError(f"{options.run}: no checkpoint there (give a run directory or its "
                          "checkpoint file)")
    if not is_loopback(host) and not token:
        print(f"lenet serve: warning: listening on {host} with no token: anyone who can "
              "reach this machine can use the API (set --token or LENET_TOKEN)",
              file=sys.stderr)
    options = replace(options, own_process=True)  # threads, collector: see Options
    app, _ = build(options, limits, token=token, cors=cors,
                   log=log_line if log_requests else None)
    fast_loop = importlib.util.find_spec("uvloop") is not None
    fast_http = importlib.util.find_spec("httptools") is not None
    where = f"[{host}]" if ":" in host else host
    print(f"lenet serve: http://{where}:{port}/ (API under /v1, docs at /docs); "
          f"{'uvloop' if fast_loop else 'asyncio'} + {'httptools' if fast_http else 'h11'}",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, loop="uvloop" if fast_loop else "asyncio",
                http="httptools" if fast_http else "h11", lifespan="on", access_log=False,
                log_level="warning", backlog=2048, timeout_keep_alive=30, proxy_headers=False,
                timeout_graceful_shutdown=5)
