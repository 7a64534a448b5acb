"""A short version of benchmarks/serve_load.py against a real `lenet serve` subprocess:
the bad-input suite over real sockets, then single images at concurrency 1, 8 and 64 and
batches of 256: 0 errors, 0 dropped requests, the same server process throughout."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from serving import Server, npy, png, serve_load
from test_serve_api import png_bomb

import lenet


@pytest.mark.slow
def test_bad_input_then_load_without_an_error_or_a_restart(served_run):
    images = lenet.Run.open(served_run).dataset.test.images
    # A 1 MiB body limit: the over-limit body below (1.2 MB) fits in the loopback buffers,
    # so the client reads the 413 instead of finding the connection closed mid-send.
    server = Server(served_run, "--quiet", "--max-batch", "300", "--max-bytes", "1048576")
    pid = server.process.pid
    try:
        raw = {"Content-Type": "application/octet-stream"}
        good = png(images[0])
        with httpx.Client(base_url=server.url, timeout=30) as c:
            statuses = [
                c.post("/v1/predict", content=png_bomb(), headers=raw).status_code,
                c.post("/v1/predict", content=good[:40], headers=raw).status_code,
                c.post("/v1/predict", content=b"plain text, not a picture", headers=raw
                       ).status_code,
                c.post("/v1/predict", content=b"", headers=raw).status_code,
                c.post("/v1/predict", content=good, headers={"Content-Type": "text/html"}
                       ).status_code,
                c.post("/v1/predict", content=b"\0" * 1_200_000, headers=raw).status_code,
                c.post("/v1/predict/batch", content=npy(images[:1].repeat(301, 0)),
                       headers=raw).status_code,
            ]
            assert statuses == [413, 400, 415, 400, 415, 413, 413]
        singles, batches = serve_load.payloads(images, 256, None)
        out = io.StringIO()
        results = asyncio.run(serve_load.run_all(
            server.port, pid, singles, batches, concurrencies=[1, 8, 64],
            single_requests=300, batch_requests=8, batch=256, soak=0, out=out))
        print(out.getvalue())
        assert [(r.name, r.concurrency) for r in results] == [
            ("single", 1), ("single", 8), ("single", 64),
            ("batch of 256", 1), ("batch of 256", 8), ("batch of 256", 64)]
        assert all(r.requests >= 8 and len(r.latencies) == r.requests for r in results)
        assert sum(r.errors for r in results) == 0, out.getvalue()
        assert sum(r.dropped for r in results) == 0, out.getvalue()
        assert server.alive() and server.process.pid == pid
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
