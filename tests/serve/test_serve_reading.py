"""lenet serve's request readers alone (serve/reading.py): starlette Requests built from an
ASGI scope and a receive function, no app, no model."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from conftest import require
from PIL import Image

require("fastapi")
from starlette.requests import Request  # noqa: E402

from lenet.serve.decoding import Decoder  # noqa: E402
from lenet.serve.limits import ApiError, Limits  # noqa: E402
from lenet.serve.reading import LARGE_BODY, RequestReader  # noqa: E402


class ReadyService:
    """What the readers use of a Service: its readiness and its decoder."""

    def __init__(self) -> None:
        self.decoder = Decoder((28, 28), 1.0, 16_000_000)

    def check_ready(self) -> None:
        pass


def request(body: bytes, content_type: str, query: str = "", *, chunks: int = 1,
            stall: float = 0.0) -> Request:
    """A POST whose body arrives in `chunks` pieces, the last after `stall` seconds."""
    size = max(1, -(-len(body) // chunks))
    pieces = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    sent = iter(range(len(pieces)))

    async def receive() -> dict:
        i = next(sent)
        if i == len(pieces) - 1 and stall:
            await asyncio.sleep(stall)
        return {"type": "http.request", "body": pieces[i], "more_body": i < len(pieces) - 1}

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "query_string":
             query.encode(), "headers": [(b"content-type", content_type.encode())]}
    return Request(scope, receive)


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "lenet-test-boundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
             f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
             for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def reader(**limits) -> RequestReader:
    return RequestReader(ReadyService(), Limits(**limits))


def run(coroutine):
    return asyncio.run(coroutine)


def test_one_image_from_the_raw_body_is_taken_as_it_is():
    pixels = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    image = run(reader().one_image(request(png(pixels), "image/png", "prepare=none")))
    assert np.array_equal(image.pixels, pixels)


def test_one_image_from_a_multipart_body_and_a_body_with_no_file():
    pixels = np.zeros((28, 28), np.uint8)
    body, kind = multipart([("digit.png", png(pixels))])
    image = run(reader().one_image(request(body, kind, "prepare=none")))
    assert image.pixels.shape == (28, 28)
    empty = b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--b--\r\n"
    with pytest.raises(ApiError) as caught:
        run(reader().one_image(request(empty, "multipart/form-data; boundary=b")))
    assert caught.value.status == 400 and "no file" in caught.value.detail


def test_files_over_the_limit_are_refused_as_too_large():
    body, kind = multipart([(f"{i}.png", png(np.zeros((28, 28), np.uint8))) for i in range(3)])
    files = run(reader().files(request(body, kind), 3))
    assert [name for name, _ in files] == ["0.png", "1.png", "2.png"]
    with pytest.raises(ApiError) as caught:
        run(reader().files(request(body, kind), 2))
    assert caught.value.status == 413


def test_a_body_that_stalls_past_the_limit_is_a_408():
    with pytest.raises(ApiError) as caught:
        run(reader(timeout=0.05).body(request(b"x" * 100, "image/png", chunks=2, stall=1.0)))
    assert caught.value.status == 408 and "0.05 s" in caught.value.detail


def test_an_answer_that_takes_too_long_is_a_503():
    with pytest.raises(ApiError) as caught:
        run(reader(timeout=0.05).answer(asyncio.sleep(1.0)))
    assert caught.value.status == 503
    assert run(reader().answer(asyncio.sleep(0, result="done"))) == "done"


def test_a_large_image_is_decoded_the_same_off_the_event_loop():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    data = png(photo)
    assert len(data) > LARGE_BODY
    on_thread = run(reader().decode(data, "auto", None, "photo"))
    inline = ReadyService().decoder.one(data, prepare="auto", invert=None, source="photo")
    assert np.array_equal(on_thread.pixels, inline.pixels)
