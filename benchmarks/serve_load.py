"""Loopback load test of `lenet serve`: single images and batches at several concurrencies.

Starts a real `lenet serve RUN` subprocess on a free port, waits for /readyz, then
for each scenario keeps CONCURRENCY keep-alive connections busy with POSTs of
test-set images (PNG, one per request, to /v1/predict; or NPY arrays of 256 to
/v1/predict/batch) and prints requests/s, images/s, p50/p99 latency (client side,
end to end), errors (any status but 200, or an answer that is not the full JSON),
dropped requests (no answer: connection reset, timeout) and the server's RSS.
The client is raw asyncio HTTP/1.1 (no HTTP library: a few microseconds per
request), so it does not take the cores the server is measured on; run it on an
otherwise idle machine.

    python benchmarks/serve_load.py RUN                 # the docs' figures (~3 min)
    python benchmarks/serve_load.py RUN --quick         # a few seconds: does it hold up?
    python benchmarks/serve_load.py RUN --soak 100000   # RSS over 100,000 requests
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    name: str
    concurrency: int
    images_per_request: int
    requests: int = 0
    errors: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss_mib: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (f"{self.name:<14} {self.concurrency:>5} {self.requests:>8,} "
                f"{self.rate:>9,.0f} {self.rate * self.images_per_request:>10,.0f} "
                f"{p50 * 1e3:>8.2f} {p99 * 1e3:>8.2f} {self.errors:>6} {self.dropped:>7} "
                f"{self.rss_mib:>8.1f}")


HEADER = (f"{'scenario':<14} {'conc.':>5} {'requests':>8} {'req/s':>9} {'images/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'dropped':>7} {'RSS MiB':>8}")


def request_bytes(path: str, body: bytes, content_type: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: lenet\r\nContent-Type: {content_type}\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def connection(host: str, port: int, requests: list[bytes], count: int, expect: int,
                     result: Result, timeout: float) -> None:
    """One keep-alive connection sending `count` requests, one after the other."""
    reader = writer = None
    k = 0
    while k < count:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            data = requests[k % len(requests)]
            started = time.perf_counter()
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await asyncio.wait_for(reader.readexactly(length), timeout)
            result.latencies.append(time.perf_counter() - started)
            if status != 200 or not answered(body, expect):
                result.errors += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            result.dropped += 1
            if writer is not None:
                writer.close()
            reader = writer = None
        k += 1
        result.requests += 1
    if writer is not None:
        writer.close()


def answered(body: bytes, expect: int) -> bool:
    """The whole answer: a prediction, or `expect` of them (checked without parsing the JSON:
    the client stays cheap; the tests parse the answers)."""
    if expect == 1:
        return body.startswith(b'{"class":') and body.endswith(b"}")
    return (body.startswith(b'{"count":%d,"results":[' % expect) and body.endswith(b"}")
            and body.count(b'"ood":') == expect)


async def scenario(name: str, host: str, port: int, requests: list[bytes], *,
                   concurrency: int, total: int, images: int, timeout: float = 30.0) -> Result:
    result = Result(name, concurrency, images)
    per = [total // concurrency + (1 if i < total % concurrency else 0)
           for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(connection(host, port, requests[i::concurrency] or requests, n,
                                      images, result, timeout)
                           for i, n in enumerate(per) if n))
    result.seconds = time.perf_counter() - started
    return result


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def payloads(images: np.ndarray, batch: int, token: str | None,
             ood: bool = True) -> tuple[list[bytes], list[bytes]]:
    """(single-image requests, batch requests) from uint8 (N, 28, 28) test images."""
    flag = "" if ood else "&ood=false"
    singles = [request_bytes(f"/v1/predict?input=none{flag}", png(x), "image/png", token)
               for x in images[:1000]]
    batches = [request_bytes(f"/v1/predict/batch?top_k=3{flag}",
                             npy(np.resize(np.roll(images, -k * batch, 0),
                                           (batch, *images.shape[1:]))),
                             "application/x-npy", token) for k in range(4)]
    return singles, batches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(command: list[str], port: int, env: dict[str, str] | None = None,
                 wait: float = 120.0) -> subprocess.Popen:
    """`command` (a `lenet serve ...` line) on `port`, once /readyz answers 200. Its
    standard error goes to a temporary file (a pipe nobody reads would fill and stop it):
    `stop_server` returns it."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by stop_server)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env,
                               text=True)
    process.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"lenet serve exited with {process.returncode}:\n"
                               f"{stop_server(process)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"lenet serve was not ready within {wait:.0f} s:\n"
                       f"{stop_server(process)}")


def stop_server(process: subprocess.Popen) -> str:
    """Stop it (SIGTERM, then SIGKILL after 15 s); its standard error."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    text = log.read()
    log.close()
    return text


async def run_all(port: int, pid: int, singles: list[bytes], batches: list[bytes], *,
                  concurrencies: list[int], single_requests: int, batch_requests: int,
                  batch: int, soak: int, out: io.TextIOBase = sys.stdout) -> list[Result]:
    host = "127.0.0.1"
    await scenario("warm-up", host, port, singles, concurrency=8, total=500, images=1)
    print(f"server RSS after warm-up: {rss_mib(pid):.1f} MiB", file=out)
    print(HEADER, file=out)
    results = []
    plan = [("single", singles, 1, single_requests), (f"batch of {batch}", batches, batch,
                                                      batch_requests)]
    for name, requests, images, total in plan:
        for c in concurrencies:
            r = await scenario(name, host, port, requests, concurrency=c,
                               total=max(total, c), images=images)
            r.rss_mib = rss_mib(pid)
            print(r.row(), file=out, flush=True)
            results.append(r)
    if soak:
        before = rss_mib(pid)
        r = await scenario("soak (single)", host, port, singles, concurrency=64, total=soak,
                           images=1)
        r.rss_mib = rss_mib(pid)
        print(r.row(), file=out)
        print(f"server RSS over {soak:,} soak requests: {before:.1f} -> {r.rss_mib:.1f} MiB "
              f"({r.rss_mib - before:+.1f} MiB)", file=out)
        results.append(r)
    return results


def test_images(run: str) -> np.ndarray:
    import lenet

    return lenet.Run.open(run).dataset.test.images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a trained run directory (its test split is the load)")
    parser.add_argument("--concurrency", default="1,8,64", help="[1,8,64]")
    parser.add_argument("--requests", type=int, default=20_000,
                        help="single-image requests per concurrency [20,000]")
    parser.add_argument("--batch-requests", type=int, default=400,
                        help="batch requests per concurrency [400]")
    parser.add_argument("--batch", type=int, default=256, help="images per batch [256]")
    parser.add_argument("--soak", type=int, default=100_000,
                        help="single-image requests at concurrency 64 for the RSS check "
                             "[100,000; 0: none]")
    parser.add_argument("--quick", action="store_true",
                        help="1,000 singles and 20 batches each, no soak")
    parser.add_argument("--no-ood", action="store_true",
                        help="ask for no out-of-distribution check (ood=false)")
    parser.add_argument("--server-args", default="", help="more `lenet serve` options")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.batch_requests, args.soak = 1000, 20, 0
    port = free_port()
    singles, batches = payloads(test_images(args.run), args.batch, None, not args.no_ood)
    command = [sys.executable, "-m", "lenet", "serve", args.run, "--port", str(port),
               "--quiet", *args.server_args.split()]
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"lenet serve load test: {args.run}; CPU {cpu}, {os.cpu_count()} cores; client "
          f"and server on this machine; OOD check {'off' if args.no_ood else 'on'}")
    process = start_server(command, port)
    try:
        print(f"server RSS when ready: {rss_mib(process.pid):.1f} MiB")
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        results = runner(run_all(
            port, process.pid, singles, batches,
            concurrencies=[int(c) for c in args.concurrency.split(",")],
            single_requests=args.requests, batch_requests=args.batch_requests,
            batch=args.batch, soak=args.soak))
        alive = process.poll() is None
    finally:
        stop_server(process)
    errors = sum(r.errors for r in results)
    dropped = sum(r.dropped for r in results)
    alone = [r for r in results if r.name == "single" and r.concurrency == 1 and r.latencies]
    median = (f"; median single-image latency at concurrency 1: "
              f"{statistics.median(alone[0].latencies) * 1e3:.2f} ms" if alone else "")
    print(f"total: {sum(r.requests for r in results):,} requests, {errors} errors, "
          f"{dropped} dropped; server {'up throughout' if alive else 'DIED'}{median}")
    return 0 if errors == dropped == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
