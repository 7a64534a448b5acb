"""What every request goes through before its route (plain ASGI, cheap): the token for
`/v1/*`, the body limit (Content-Length first, then the bytes as they arrive), one log
line, the metrics."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from .limits import ApiError, Limits
from .metrics import Metrics

Handler = Callable[[Request], Awaitable[Any]]


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "too_large", f"the request body is over the limit of "
                                           f"{limit:,} bytes")


class Gate:
    def __init__(self, app: Any, *, limits: Limits, metrics: Metrics, routes: set[str],
                 token: str | None = None, log: Callable[[str], None] | None = None,
                 direct: dict[tuple[str, str], Handler] | None = None,
                 on_error: Callable[[Exception], Any] | None = None) -> None:
        self.app, self.limits, self.metrics, self.routes = app, limits, metrics, routes
        self.token = token.encode() if token else None
        self.log = log
        # (method, path) -> handler(Request) -> Response, answered here without `app`'s
        # middleware; `on_error` turns what a handler raises into a Response.
        self.direct, self.on_error = direct or {}, on_error

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        status = 500  # unless a response starts

        async def send_noting_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            refusal = self.refuse(scope) if path.startswith("/v1/") else None
            if refusal is not None:
                await send_error(send_noting_status, refusal)
            else:
                limited = self.limit(receive) if method in ("POST", "PUT") else receive
                handler = self.direct.get((method, path))
                if handler is not None and self.on_error is not None:
                    await self.answer(handler, scope, limited, send_noting_status)
                else:
                    await self.app(scope, limited, send_noting_status)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = path if path in self.routes else (
                "/static" if path.startswith("/static/") else "other")
            self.metrics.observe(method, route, status, seconds)
            if self.log is not None:
                client = scope.get("client") or ("-", 0)
                self.log(f'{client[0]}:{client[1]} "{method} {path}" {status} '
                         f"{seconds * 1e3:.2f} ms")

    async def answer(self, handler: Handler, scope: dict[str, Any], receive: Any,
                     send: Any) -> None:
        assert self.on_error is not None  # __call__ answers only when it has one
        try:
            response = await handler(Request(scope, receive))
        except Exception as e:  # ApiError: a 4xx; anything else a bug, logged, a 500
            response = self.on_error(e)
        await response(scope, receive, send)

    def refuse(self, scope: dict[str, Any]) -> ApiError | None:
        """401 without the token; 413 when Content-Length says the body is too large."""
        headers = dict(scope["headers"])
        if self.token is not None and scope["method"] != "OPTIONS":
            given = headers.get(b"authorization", b"")
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(),
                                                                       self.token):
                return ApiError(401, "unauthorized", "this server needs the header "
                                                     "'Authorization: Bearer TOKEN'")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return ApiError(400, "bad_request", "Content-Length is not a number")
            if size > self.limits.max_bytes:
                return ApiError(413, "too_large", f"the request body ({size:,} bytes) is over "
                                                  f"the limit of {self.limits.max_bytes:,}")
        return None

    def limit(self, receive: Any) -> Any:
        """`receive` that stops a body growing past the limit (no Content-Length, or a
        wrong one): BodyTooLarge, answered as 413 by the app's error handler."""
        received, limit = 0, self.limits.max_bytes

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited


async def send_error(send: Any, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
