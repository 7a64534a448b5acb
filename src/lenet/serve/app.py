"""The routes: the JSON API under /v1, health, metrics, and the page at /.

Every answer other than 200 is `{"error": ..., "detail": ...}` (limits.ApiError);
bad input is never a 500. The OpenAPI schema is at /openapi.json, shown at /docs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from . import queries as q
from . import schema as s
from .decoding import PREPARE, ModelInput, body_kind
from .limits import ApiError, Limits, bad_request
from .reading import RequestReader
from .responses import cut_top, error_response, json_response, model_input
from .service import Service, with_photo_check

STATIC = Path(__file__).parent / "static"
ROUTES = {"/", "/v1/predict", "/v1/predict/batch", "/v1/activations", "/v1/model",
          "/v1/sample", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
INPUT = ("png", "list", "none")  # /v1/predict's input=
BATCH_INPUT = ("none", "png", "list")  # /v1/predict/batch's
SPLITS = ("test", "train")


def create_app(service: Service, limits: Limits | None = None, *,
               secured: bool = False) -> FastAPI:
    """The app for `service` (limits: the service's unless given); it loads the run on a
    thread at start-up unless loaded. `secured`: the gate in front asks for a token on
    /v1/* (the schema says so)."""
    limits = limits or service.limits
    reader = RequestReader(service, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        if not service.ready.is_set():
            threading.Thread(target=service.load, name="lenet-load", daemon=True).start()
        yield
        service.close()

    # /docs is served below from swagger-ui-bundle's files: FastAPI's own page loads
    # Swagger UI from a CDN, and the server must work offline.
    app = FastAPI(title="lenet serve", version=__version__, lifespan=lifespan, docs_url=None,
                  description="A trained LeNet: classify images, see its activations. Every "
                              'error is JSON: {"error": ..., "detail": ...}.')

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, e: ApiError) -> Response:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(str(x) for x in err['loc'][1:])}: {err['msg']}"
                           for err in e.errors())
        return json_response({"error": "bad_request", "detail": detail}, 400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> Response:
        return error_response(e)

    @app.exception_handler(Exception)
    async def bug(_request: Request, e: Exception) -> Response:
        return error_response(e)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = s.complete(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes), secured)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override

    @app.post("/v1/predict", summary="Classify one image", openapi_extra=s.operation(
        s.json_answer(s.PREDICTION), *s.POSTED, secured=secured, body=s.IMAGE_BODY,
        params=s.parameters(top_k=s.TOP_K, input=s.input_param(INPUT, "the 28x28 input "
                            "the model saw"), prepare=s.PREPARE_PARAM, invert=s.INVERT,
                            ood=s.OOD)))
    async def predict(request: Request) -> Response:
        """One image (PNG, JPEG, GIF, BMP, WebP, PGM, NPY, IDX) as the raw body or the
        multipart field `file`. Returns the top classes, the out-of-distribution verdict,
        the 28x28 input the model saw and the server's latency."""
        started = time.perf_counter()
        query = request.query_params
        top_k, form = q.number(query, "top_k", 5, 1, 1000), q.choice(query, "input", INPUT)
        ood = q.flag(query, "ood", True)
        batcher = service.batcher
        if batcher is None or not ood:  # not loaded yet (one_image says so), or alone
            image = await reader.one_image(request)
        else:
            batcher.expect()  # images gathered meanwhile wait for this one
            try:
                image = await reader.one_image(request)
            except BaseException:
                batcher.arrived()
                raise
        if ood:  # the photo check reads the picture's original (none for an array)
            assert batcher is not None  # one_image refused the request: not loaded
            p = with_photo_check(cut_top(await reader.answer(
                batcher.submit(image.pixels, expected=True)), top_k), image.original)
        else:
            alone = service.classify_many(image.pixels[None], top_k, ood=False)
            p = (await reader.answer(alone))[0]
        return json_response({**p, "input": model_input(image, form),
                              "latency_ms": (time.perf_counter() - started) * 1e3})

    @app.post("/v1/predict/batch", summary="Classify many images", openapi_extra=s.operation(
        s.json_answer(s.BATCH), *s.POSTED, secured=secured, body=s.BATCH_BODY,
        params=s.parameters(top_k=s.TOP_K, input=s.input_param(BATCH_INPUT, "each input "
                            "as the model saw it"), prepare=s.PREPARE_PARAM, invert=s.INVERT,
                            ood=s.OOD)))
    async def predict_batch(request: Request) -> Response:
        """An NPY or IDX array (N, 28, 28) as the raw body, or pictures as multipart files
        (any field name); one result per image, in order."""
        started = time.perf_counter()
        query = request.query_params
        top_k, form = q.number(query, "top_k", 5, 1, 1000), q.choice(query, "input", BATCH_INPUT)
        ood = q.flag(query, "ood", True)
        service.check_ready()
        if body_kind(request.headers.get("content-type")) == "multipart":
            prepare, invert = q.choice(query, "prepare", PREPARE), q.flag(query, "invert", None)
            inputs = [await reader.decode(data, prepare, invert, name)
                      for name, data in await reader.files(request, limits.max_batch)]
            if not inputs:
                raise bad_request("the multipart body has no files")
            images = np.stack([i.pixels for i in inputs])
        else:
            images = service.decoder.many(await reader.body(request), limits.max_batch)
            inputs = None
        results = await reader.answer(service.classify_many(images, top_k, bool(ood)))
        if inputs:
            results = [with_photo_check(r, i.original) for r, i in zip(results, inputs,
                                                                        strict=True)]
        if form != "none":
            for k, r in enumerate(results):
                r["input"] = model_input(inputs[k] if inputs else ModelInput(images[k]), form)
        return json_response({"count": len(results), "results": results,
                              "latency_ms": (time.perf_counter() - started) * 1e3})

    @app.post("/v1/activations", summary="Feature maps of one image", openapi_extra=s.operation(
        s.json_answer(s.ACTIVATIONS), *s.POSTED, secured=secured, body=s.IMAGE_BODY,
        params=s.parameters(values=s.VALUES, prepare=s.PREPARE_PARAM, invert=s.INVERT)))
    async def activations(request: Request) -> Response:
        """The layer-1 and layer-2 feature maps (after the activation) as base64 PNGs, one
        colour scale per layer; `values=true` adds the numbers."""
        started = time.perf_counter()
        values = bool(q.flag(request.query_params, "values", False))
        image = await reader.one_image(request)
        maps = await reader.answer(service.activations(image.pixels, values))
        return json_response({**maps, "input": model_input(image, "png"),
                              "latency_ms": (time.perf_counter() - started) * 1e3})

    @app.get("/v1/model", summary="The model being served", openapi_extra=s.operation(
        s.json_answer(s.MODEL), 503, secured=secured))
    async def model() -> Response:
        service.check_ready()
        return json_response(service.info)

    @app.get("/v1/sample", summary="An image of the run's dataset", openapi_extra=s.operation(
        s.json_answer(s.SAMPLE), 400, 404, 503, secured=secured,
        params=s.parameters(split=s.SPLIT, index=s.INDEX)))
    async def sample(request: Request) -> Response:
        """A random image of the split (or image `index`), its label, as a base64 PNG."""
        split = q.choice(request.query_params, "split", SPLITS)
        index = q.optional_number(request.query_params, "index", 0)
        service.check_ready()
        return json_response(await service.sample(split, index))

    @app.get("/healthz", summary="The process is up", openapi_extra=s.operation(
        s.json_answer(s.ALIVE), secured=False))
    async def healthz() -> Response:
        return json_response({"alive": True})

    @app.get("/readyz", summary="The model is loaded and warmed up",
             openapi_extra=s.operation(s.json_answer(s.READY), 503, secured=False))
    async def readyz() -> Response:
        service.check_ready()
        return json_response({"ready": True, "backend": service.info["backend"]})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
             openapi_extra=s.operation(
        {"description": "Prometheus' text exposition format", "content": {
            "text/plain": {"schema": {"type": "string"}}}}, secured=False))
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="lenet serve: API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon-32x32.png")

    # Mounted before /static, so that /static/docs/... is Swagger UI's own files.
    app.mount("/static/docs", StaticFiles(directory=swagger_ui_path), name="docs")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The gate serves these itself (middleware.py): FastAPI's middleware stack around a
    # route costs about a quarter of a single-image request. Same functions, same answers.
    app.state.direct = {("POST", "/v1/predict"): predict,
                        ("POST", "/v1/predict/batch"): predict_batch,
                        ("POST", "/v1/activations"): activations}
    return app
