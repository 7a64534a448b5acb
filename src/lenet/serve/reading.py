"""Reading a request: its body or multipart files within the time limit, one image
decoded (on a thread when it is large), and waiting for the answer within the limit.
The routes (app.py) call these; they are tested alone through starlette's Request."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from . import queries as q
from .decoding import PREPARE, ModelInput, body_kind
from .limits import ApiError, Limits, bad_request, too_large
from .service import Service

LARGE_BODY = 64 * 1024  # bytes: images larger than this are decoded on a thread


class RequestReader:
    """What every route needs of a request, bound to the service and its limits."""

    def __init__(self, service: Service, limits: Limits) -> None:
        self.service, self.limits = service, limits

    async def body(self, request: Request) -> bytes:
        try:
            async with asyncio.timeout(self.limits.timeout):
                return await request.body()
        except TimeoutError:
            raise ApiError(408, "timeout", f"the body did not arrive within "
                                           f"{self.limits.timeout:g} s") from None

    async def files(self, request: Request, max_files: int) -> list[tuple[str, bytes]]:
        """(name, bytes) of every file part of a multipart body, in order."""
        try:
            async with asyncio.timeout(self.limits.timeout):
                form = await request.form(max_files=max_files + 1, max_fields=100,
                                          max_part_size=self.limits.max_bytes)
                found = [(getattr(v, "filename", None) or k, await v.read())
                         for k, v in form.multi_items() if not isinstance(v, str)]
                await form.close()
        except TimeoutError:
            raise ApiError(408, "timeout", f"the body did not arrive within "
                                           f"{self.limits.timeout:g} s") from None
        except (HTTPException, MultiPartException) as e:  # too many files, bad framing
            detail = str(getattr(e, "detail", None) or getattr(e, "message", e))
            if "Too many files" in detail:
                raise too_large(f"more than {max_files:,} files; the limit is "
                                f"{max_files:,}") from None
            raise bad_request(f"multipart body: {detail}") from None
        if len(found) > max_files:
            raise too_large(f"{len(found):,} files; the limit is {max_files:,}")
        return found

    async def answer(self, work: Any) -> Any:
        try:
            async with asyncio.timeout(self.limits.timeout):
                return await work
        except TimeoutError:
            raise ApiError(503, "timeout", f"no answer within {self.limits.timeout:g} s; the "
                                           "server is overloaded") from None

    async def one_image(self, request: Request) -> ModelInput:
        self.service.check_ready()
        prepare = q.choice(request.query_params, "prepare", PREPARE)
        invert = q.flag(request.query_params, "invert", None)
        if body_kind(request.headers.get("content-type")) == "multipart":
            found = await self.files(request, 1)
            if not found:
                raise bad_request("the multipart body has no file; send it as field 'file'")
            name, data = found[0]
            return await self.decode(data, prepare, invert, name)
        return await self.decode(await self.body(request), prepare, invert, "body")

    async def decode(self, data: bytes, prepare: str, invert: bool | None,
                     source: str) -> ModelInput:
        """A small image (the usual 28x28 PNG: ~0.1 ms) on the event loop; a large one
        (a photo: tens of milliseconds) on a thread, so the others are not held up."""
        if len(data) <= LARGE_BODY:
            return self.service.decoder.one(data, prepare=prepare, invert=invert, source=source)
        return await asyncio.to_thread(self.service.decoder.one, data, prepare=prepare,
                                       invert=invert, source=source)
