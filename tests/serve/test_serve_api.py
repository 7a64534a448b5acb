"""`lenet serve`'s API in-process (Starlette's TestClient, httpx's ASGI transport): every
route, every error status, the token, CORS, the limits, micro-batching and the log line.
Every error is JSON {"error", "detail"}, never a 500, and the server answers after it."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import warnings
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import npy, png

import lenet
from lenet.cli import main
from lenet.data import idx
from lenet.serve.limits import Limits
from lenet.serve.metrics import Metrics
from lenet.serve.server import build, is_loopback
from lenet.serve.service import Options, Service

with warnings.catch_warnings():  # starlette 1.x: "install httpx2"; httpx is what we have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="session")
def service(served_run):
    """The run, loaded and warmed up once for every test here."""
    loaded = Service(Options(str(served_run)), Limits(), Metrics())
    loaded.load()
    assert loaded.ready.is_set(), loaded.failure
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def test_images(served_run):
    test = lenet.Run.open(served_run).dataset.test
    return test.images, test.labels


def client(service, **kw) -> TestClient:
    app, _ = build(service.options, kw.pop("limits", None), service=service, **kw)
    return TestClient(app)


def error(response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if kind:
        assert body["error"] == kind
    return body


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring width x height (2.5 gigapixels), with a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


# --- the routes ---------------------------------------------------------------------------

def test_predict_raw_and_multipart_give_the_same_answer(service, test_images):
    images, _ = test_images
    c = client(service)
    raw = c.post("/v1/predict?top_k=3", content=png(images[0]),
                 headers={"Content-Type": "image/png"})
    form = c.post("/v1/predict?top_k=3", files={"file": ("x.png", png(images[0]))})
    assert raw.status_code == form.status_code == 200
    a, b = raw.json(), form.json()
    assert a["class"] == b["class"] and a["probability"] == pytest.approx(b["probability"])
    assert a["top"][0]["class"] == a["class"] and len(a["top"]) == 3
    assert a["top"][0]["probability"] >= a["top"][1]["probability"] >= a["top"][2]["probability"]
    assert set(a["ood"]) == {"out_of_distribution", "score", "threshold", "detector"}
    assert a["ood"]["detector"] == "combined" and a["latency_ms"] > 0
    seen = Image.open(io.BytesIO(base64.b64decode(a["input"]["png"])))
    assert seen.size == (28, 28)
    # A 28x28 image on a dark background is taken as it is: the model saw these pixels.
    assert np.array_equal(np.asarray(seen), images[0])


def test_arrays_and_every_picture_format(service, test_images):
    images, _ = test_images
    c = client(service)
    as_is = c.post("/v1/predict?input=list", content=npy(images[1]),
                   headers={"Content-Type": "application/x-npy"}).json()
    assert np.array_equal(np.array(as_is["input"]["pixels"], np.uint8), images[1])
    floats = c.post("/v1/predict", content=npy(images[1][None, None] / 255.0),
                    headers={"Content-Type": "application/octet-stream"}).json()
    assert floats["class"] == as_is["class"]
    one_idx = c.post("/v1/predict", content=idx.encode(images[1]),
                     headers={"Content-Type": "application/octet-stream"}).json()
    assert one_idx["class"] == as_is["class"]
    big = np.kron(images[1], np.ones((8, 8), np.uint8))  # 224x224: prepared like lenet predict
    for fmt, options in [("JPEG", {"quality": 95}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
                         ("PPM", {})]:
        r = c.post("/v1/predict?input=none", content=png(big, fmt, **options),
                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, (fmt, r.text)
        assert "input" in r.json()
    photo = png(np.random.default_rng(0).integers(0, 255, (500, 500, 3), dtype=np.uint8))
    assert len(photo) > 64 * 1024  # decoded on a thread, not on the event loop
    assert c.post("/v1/predict", content=photo, headers={"Content-Type": "image/png"}
                  ).status_code == 200


def test_batch_answers_in_order_like_single_images(service, test_images):
    images, _ = test_images
    c = client(service)
    batch = c.post("/v1/predict/batch?top_k=2", content=npy(images[:40]),
                   headers={"Content-Type": "application/x-npy"})
    assert batch.status_code == 200
    body = batch.json()
    assert body["count"] == 40 and len(body["results"]) == 40
    singles = [c.post("/v1/predict", content=npy(x),
                      headers={"Content-Type": "application/x-npy"}).json() for x in images[:5]]
    for s, r in zip(singles, body["results"], strict=False):
        assert r["class"] == s["class"] and r["probability"] == pytest.approx(s["probability"],
                                                                            abs=1e-5)
        assert len(r["top"]) == 2 and r["ood"]["out_of_distribution"] == \
            s["ood"]["out_of_distribution"]
    files = [("file", (f"{k}.png", png(images[k]))) for k in range(3)]
    multi = c.post("/v1/predict/batch?input=png", files=files).json()
    assert [r["class"] for r in multi["results"]] == [r["class"] for r in body["results"][:3]]
    assert all("png" in r["input"] for r in multi["results"])
    assert c.post("/v1/predict/batch?ood=false", content=idx.encode(images[:4]),
                  headers={"Content-Type": "application/octet-stream"}).json()["results"][0][
        "ood"] is None


def test_answers_built_from_arrays_are_run_classify_s_predictions(service, test_images):
    # The server builds its answers from the arrays (no Prediction per image); they must say
    # what the library's Run.classify says, image by image, for batches and single images.
    images, _ = test_images
    run = service.run
    for pixels, top_k, ood in ((images[:50], 3, True), (images[7], 10, True),
                               (images[:9], 5, False), (images[8], 1, False)):
        expected = run.classify(pixels, top_k=top_k, ood=service.detector if ood else False)
        got = service._classify(pixels, top_k=top_k, ood=ood)
        assert len(got) == len(expected)
        for a, p in zip(got, expected, strict=True):
            assert (a["class"], a["index"], a["probability"]) == (p.label, p.index,
                                                                  p.probability)
            assert [(t["class"], t["probability"]) for t in a["top"]] == p.top
            assert [t["index"] for t in a["top"]] == list(p.top_indices)
            if ood:
                assert a["ood"] == {"out_of_distribution": p.out_of_distribution,
                                    "score": p.score, "threshold": p.threshold,
                                    "detector": p.detector}
            else:
                assert a["ood"] is None


def test_activations_are_6_and_16_maps(service, test_images):
    images, _ = test_images
    r = client(service).post("/v1/activations?values=true", content=png(images[2]),
                             headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    layers = r.json()["layers"]
    assert [(v["channels"], len(v["png"])) for v in layers.values()] == [(6, 6), (16, 16)]
    maps = Image.open(io.BytesIO(base64.b64decode(layers["act2"]["png"][0])))
    assert maps.size == (layers["act2"]["width"], layers["act2"]["height"])
    assert np.array(layers["act1"]["values"]).shape == (6, layers["act1"]["height"],
                                                        layers["act1"]["width"])
    assert sum(r.json()["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def test_model_sample_health_ready_and_metrics(service, served_run):
    c = client(service)
    info = c.get("/v1/model").json()
    assert info["model"] == "lenet5-modern" and info["parameters"] == 61_706
    assert info["backend"] in ("native", "hybrid", "torch") and len(info["classes"]) == 10
    assert info["checkpoint_sha256"] and 0 <= info["test_accuracy"] <= 1
    assert info["ood"]["detector"] == "combined" and info["limits"]["max_batch"] == 1024
    sample = c.get("/v1/sample?split=test&index=7").json()
    assert sample["index"] == 7 and sample["label"] in info["classes"]
    assert c.get("/healthz").json() == {"alive": True}
    assert c.get("/readyz").json()["ready"] is True
    c.post("/v1/predict", content=b"")  # one 400 to count
    text = c.get("/metrics").text
    assert 'lenet_requests_total{method="POST",route="/v1/predict",status="400"}' in text
    assert 'lenet_requests_total{method="GET",route="/v1/model",status="200"}' in text
    for name in ("lenet_request_duration_seconds_bucket", "lenet_images_classified_total",
                 "lenet_requests_in_flight", "lenet_model_batch_size_bucket",
                 'lenet_model_info{backend='):
        assert name in text
    page = c.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("app.js", "style.css"):
        assert c.get(f"/static/{asset}").status_code == 200
    assert "/v1/predict" in c.get("/openapi.json").json()["paths"]
    docs = c.get("/docs")
    assert docs.status_code == 200 and "://" not in docs.text  # nothing from a CDN
    for asset in ("/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css"):
        assert c.get(asset).status_code == 200, asset


# --- bad input: a clear JSON error, never a 500, and the server answers afterwards ---------

def test_every_kind_of_bad_input(service, test_images):
    images, _ = test_images
    c = client(service)
    good = png(images[0])
    raw = {"Content-Type": "application/octet-stream"}
    assert "50000x50000" in error(c.post("/v1/predict", content=png_bomb(), headers=raw),
                                  413, "too_large")["detail"]
    assert "truncated or corrupt" in error(c.post("/v1/predict", content=good[:len(good) // 2],
                                                  headers=raw), 400)["detail"]
    error(c.post("/v1/predict", content=b"just some text\n" * 20, headers=raw), 415,
          "unsupported_media_type")
    error(c.post("/v1/predict", files={"file": ("notes.txt", b"hello")}), 415)
    error(c.post("/v1/predict", content=b"", headers=raw), 400, "bad_request")
    error(c.post("/v1/predict", content=good, headers={"Content-Type": "application/json"}),
          415)
    error(c.post("/v1/predict", content=good, headers={"Content-Type": "text/plain"}), 415)
    curl = {"Content-Type": "application/x-www-form-urlencoded"}  # curl --data-binary's default
    assert "application/octet-stream" in error(c.post("/v1/predict", content=good,
                                                      headers=curl), 415)["detail"]
    error(c.post("/v1/predict", files={"other": ("x", b"")}, data={"a": "b"}), 400)
    error(c.post("/v1/predict", content=npy(np.zeros((2, 28, 28), np.uint8)), headers=raw), 400)
    error(c.post("/v1/predict", content=npy(np.array([None, 1], dtype=object)), headers=raw),
          415)
    error(c.post("/v1/predict", content=npy(np.full((28, 28), 2.0)), headers=raw), 400)
    error(c.post("/v1/predict", content=good + b"\0" * (5 * 1024 * 1024), headers=raw), 413)
    error(c.post("/v1/predict?top_k=0", content=good, headers=raw), 400)
    error(c.post("/v1/predict?top_k=many", content=good, headers=raw), 400)
    error(c.post("/v1/predict?input=jpeg", content=good, headers=raw), 400)
    error(c.post("/v1/predict?prepare=none", content=png(np.zeros((40, 40), np.uint8)),
                 headers=raw), 400)
    error(c.post("/v1/predict?ood=perhaps", content=good, headers=raw), 400)
    error(c.post("/v1/predict/batch", content=npy(np.zeros((1025, 28, 28), np.uint8)),
                 headers=raw), 413, "too_large")
    error(c.post("/v1/predict/batch", content=npy(np.zeros((3, 20, 20), np.uint8)),
                 headers=raw), 400)
    error(c.post("/v1/predict/batch", content=good, headers=raw), 415)
    error(c.post("/v1/predict/batch", content=b"", headers=raw), 400)
    error(c.get("/v1/sample?split=validation"), 400)
    error(c.get("/v1/sample?index=100000"), 404, "not_found")  # no such image
    error(c.get("/nowhere"), 404, "not_found")
    error(c.get("/v1/predict"), 405, "method_not_allowed")
    assert c.post("/v1/predict", content=good, headers=raw).status_code == 200


def test_limits_from_the_command_line(service, test_images):
    images, _ = test_images
    small = Limits(max_bytes=2000, max_batch=3)
    c = client(service, limits=small)
    body = png(np.random.default_rng(0).integers(0, 255, (60, 60), dtype=np.uint8))
    assert len(body) > 2000
    error(c.post("/v1/predict", content=body, headers={"Content-Type": "image/png"}), 413)

    def chunks():  # no Content-Length: the limit counts the bytes as they come
        yield body[:1000]
        yield body[1000:]

    error(c.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"}), 413)
    c = client(service, limits=Limits(max_batch=3))
    files = [("file", (f"{k}.npy", npy(images[k]))) for k in range(4)]
    assert "limit is 3" in error(c.post("/v1/predict/batch", files=files), 413)["detail"]
    assert c.post("/v1/predict/batch", files=files[:3]).json()["count"] == 3
    error(c.post("/v1/predict/batch", content=npy(images[:4]),
                 headers={"Content-Type": "application/x-npy"}), 413)


def test_a_body_that_does_not_arrive_in_time_is_a_408(service, test_images):
    images, _ = test_images
    app, _ = build(service.options, Limits(timeout=0.3), service=service)

    async def slow():
        yield png(images[0])[:20]
        await asyncio.sleep(1.0)
        yield b""

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            late = await c.post("/v1/predict", content=slow(),
                                headers={"Content-Type": "image/png"})
            fine = await c.post("/v1/predict", content=png(images[0]),
                                headers={"Content-Type": "image/png"})
            return late, fine

    late, fine = asyncio.run(go())
    error(late, 408, "timeout")
    assert fine.status_code == 200


def test_token_guards_v1_only_and_cors_is_off_unless_asked(service, test_images):
    images, _ = test_images
    body, raw = png(images[0]), {"Content-Type": "image/png"}
    c = client(service, token="s3cret")
    r = c.post("/v1/predict", content=body, headers=raw)
    error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    error(c.post("/v1/predict", content=body, headers={**raw, "Authorization": "Bearer nope"}),
          401)
    error(c.get("/v1/model", headers={"Authorization": "Basic s3cret"}), 401)
    assert c.post("/v1/predict", content=body,
                  headers={**raw, "Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
    open_server = client(service)
    assert open_server.post("/v1/predict", content=body, headers=raw).status_code == 200
    origin = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in open_server.get("/v1/model",
                                                                headers=origin).headers
    cors = client(service, cors=["https://example.org"])
    assert cors.get("/v1/model", headers=origin).headers[
        "access-control-allow-origin"] == "https://example.org"
    preflight = cors.options("/v1/predict", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert "access-control-allow-origin" not in cors.get("/v1/model", headers={
        "Origin": "https://elsewhere.example"}).headers


def test_not_ready_until_loaded(served_run):
    waiting = Service(Options(str(served_run)), Limits(), Metrics())
    app, _ = build(waiting.options, service=waiting)
    c = TestClient(app)  # no lifespan: nothing loads it
    assert c.get("/healthz").status_code == 200
    error(c.get("/readyz"), 503, "not_ready")
    error(c.post("/v1/predict", content=b"x"), 503, "not_ready")
    with TestClient(app) as started:  # the lifespan loads it on a thread
        assert waiting.ready.wait(60)
        assert started.get("/readyz").status_code == 200


def test_concurrent_single_images_share_model_calls_and_each_request_logs_a_line(
        service, test_images):
    images, _ = test_images
    lines = []
    app, _ = build(service.options, service=service, log=lines.append)
    images_before, calls_before = _batches(service, "_sum"), _batches(service, "_count")

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*(
                c.post("/v1/predict", content=npy(images[k % 50]),
                       headers={"Content-Type": "application/x-npy"}) for k in range(64)))

    answers = asyncio.run(go())
    assert [a.status_code for a in answers] == [200] * 64
    alone = client(service).post("/v1/predict", content=npy(images[3]),
                                 headers={"Content-Type": "application/x-npy"}).json()
    assert answers[3].json()["class"] == alone["class"]
    assert answers[3].json()["probability"] == pytest.approx(alone["probability"], abs=1e-5)
    images_classified = _batches(service, "_sum") - images_before
    model_calls = _batches(service, "_count") - calls_before
    assert images_classified >= 64 and model_calls < 64  # some calls took several images
    assert len(lines) == 64
    assert all('"POST /v1/predict" 200' in line and line.endswith(" ms") for line in lines)


def _batches(service, suffix: str) -> float:
    """The model-batch histogram's _sum (images) or _count (model calls)."""
    return next(sample.value for metric in service.metrics.batches.collect()
                for sample in metric.samples if sample.name.endswith(suffix))


# --- the command ----------------------------------------------------------------------------

def test_the_command_checks_the_run_and_warns_on_an_open_address(served_run, capsys,
                                                                 monkeypatch):
    assert main(["serve", "no/such/run"]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(kw))
    monkeypatch.delenv("LENET_TOKEN", raising=False)
    assert main(["serve", str(served_run), "--host", "0.0.0.0", "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0 with no token" in err
    assert started[0]["host"] == "0.0.0.0" and started[0]["port"] == 8123
    assert main(["serve", str(served_run), "--host", "0.0.0.0", "--token", "t"]) == 0
    assert "warning" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(served_run), "--max-batch", "0"])


@pytest.mark.slow
def test_a_run_validated_on_a_slice_serves_without_a_test_accuracy(tmp_path):
    """/v1/model's test accuracy is the last epoch evaluated on the test split; a run that
    validated on --val-split (every second epoch here) has none, and still serves."""
    from conftest import write_dataset

    from lenet.run.console import Console
    from lenet.training.config import TrainConfig

    write_dataset(tmp_path / "d")
    config = TrainConfig(dataset=str(tmp_path / "d"), model="lenet5-modern", epochs=2,
                         val_split=0.2, eval_every=2, out_dir=str(tmp_path / "runs"), name="v",
                         device="cpu")
    run_dir = lenet.Run.create(config).fit(console=Console(progress=False)).run_dir
    service = Service(Options(str(run_dir)), Limits(), Metrics())
    service.load()
    try:
        assert service.ready.is_set(), service.failure
        assert service.info["test_accuracy"] is None and service.info["epochs"] == 2
    finally:
        service.close()
