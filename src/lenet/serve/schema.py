"""The OpenAPI description of the routes: every status each operation can answer, the
JSON bodies' schemas (the error body's included), the query parameters with their
choices and ranges, the content types sent and answered.

The routes read their query parameters by hand (queries.py: FastAPI's validation costs
as much as classifying an image), so FastAPI cannot infer them: this module states
them, and a property-based test (tests/serve/test_serve_schema.py, schemathesis with
every check) holds the server to what it says.
"""

from __future__ import annotations

from typing import Any

from ..data.images import PREPARE

BEARER = "bearer"  # the security scheme's name when the server has a --token
ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error", "detail"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string", "description": "a short code: bad_request, unauthorized, "
                  "not_found, no_dataset, method_not_allowed, timeout, too_large, "
                  "unsupported_media_type, not_ready"},
        "detail": {"type": "string", "description": "what was wrong, and what to send"}},
}
# Why each status can answer (the description OpenAPI asks of every response).
STATUS_TEXT = {
    400: "Bad input: an empty, truncated or corrupt body, a wrong array shape, a bad query "
         "value",
    401: "No or wrong token: this server needs 'Authorization: Bearer TOKEN' on /v1/*",
    404: "No such image (an index past the split's end), or the run's dataset is not "
         "available to this server",
    408: "The body did not arrive within the time limit (--timeout)",
    413: "Too large: a body over --max-bytes, an image over --max-pixels, a batch over "
         "--max-batch",
    415: "Not an image, or an unsupported Content-Type (JSON, text, forms)",
    503: "The model is still loading (or failed to load), or no answer within --timeout",
}

# Query parameters: (schema, description).
TOP_K = ({"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
         "how many classes to list, most likely first")
PREPARE_PARAM = ({"type": "string", "enum": list(PREPARE), "default": PREPARE[0]},
                 "auto (the rule lenet predict follows): a 28x28 grayscale image on a dark "
                 "background is taken as it is, another 28x28 image made grayscale (a light "
                 "background inverted), anything else made to look like the training data "
                 "(grayscale, a light background inverted, cropped, padded, resized); full: "
                 "always that; none: a 28x28 image as it is")
INVERT = ({"type": "boolean"}, "invert the image (default: when its border is light)")
# Booleans are also taken as 1/0, yes/no, on/off (any case); anything else is a 400.
OOD = ({"type": "boolean", "default": True},
       "check whether the image looks like the training data")
VALUES = ({"type": "boolean", "default": False},
          "add the maps' values (C x H x W numbers per layer)")
SPLIT = ({"type": "string", "enum": ["test", "train"], "default": "test"}, "the split")
INDEX = ({"type": "integer", "minimum": 0},
         "the image's index in the split (default: a random one); one past the split's end "
         "or more is a 404")


def input_param(choices: tuple[str, ...], what: str) -> tuple[dict[str, Any], str]:
    return ({"type": "string", "enum": list(choices), "default": choices[0]},
            f"{what}: png (a base64 PNG), list (rows of 0-255) or none")


def parameters(**params: tuple[dict[str, Any], str]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": schema,
             "description": text} for name, (schema, text) in params.items()]


BINARY = {"type": "string", "format": "binary"}
IMAGE_BODY = {"required": True, "description": "one image: PNG, JPEG, GIF, BMP, WebP, PGM "
              "(any format Pillow reads), NPY or IDX, as the raw body (its format read from "
              "the bytes) or as the multipart field `file`", "content": {
    "image/png": {"schema": BINARY}, "image/jpeg": {"schema": BINARY},
    "application/octet-stream": {"schema": BINARY}, "application/x-npy": {"schema": BINARY},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": BINARY}}}}}
BATCH_BODY = {"required": True, "description": "an NPY or IDX array (N, 28, 28), uint8 or "
              "float in [0, 1], as the raw body; or pictures as multipart files (any field "
              "name)", "content": {
    "application/x-npy": {"schema": BINARY}, "application/octet-stream": {"schema": BINARY},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": BINARY, "minItems": 1}}}}}}

# --- the answers' bodies ------------------------------------------------------------------

NUMBER, INTEGER, STRING = {"type": "number"}, {"type": "integer"}, {"type": "string"}
RANKED = {"type": "object", "required": ["class", "index", "probability"], "properties": {
    "class": STRING, "index": INTEGER, "probability": NUMBER}}
VERDICT = {"type": ["object", "null"], "description": "the out-of-distribution verdict; null "
           "with ood=false or for a run without detectors",
           "required": ["out_of_distribution", "score", "threshold", "detector"],
           "properties": {"out_of_distribution": {"type": "boolean"}, "score": NUMBER,
                          "threshold": NUMBER, "detector": STRING}}
SEEN = {"type": "object", "description": "the input as the model saw it",
        "required": ["height", "width", "inverted", "notes"], "properties": {
            "height": INTEGER, "width": INTEGER, "inverted": {"type": "boolean"},
            "notes": {"type": "array", "items": STRING},
            "png": {**STRING, "description": "base64 PNG (input=png)"},
            "pixels": {"type": "array", "description": "rows of 0-255 (input=list)",
                       "items": {"type": "array", "items": INTEGER}}}}
RESULT = {"type": "object", "required": ["class", "index", "probability", "top", "ood"],
          "properties": {"class": STRING, "index": INTEGER, "probability": NUMBER,
                         "top": {"type": "array", "items": RANKED}, "ood": VERDICT,
                         "input": SEEN}}
LATENCY = {**NUMBER, "description": "the server's time for this request, in milliseconds"}
PREDICTION = {"allOf": [RESULT, {"type": "object", "required": ["input", "latency_ms"],
                                 "properties": {"latency_ms": LATENCY}}]}
BATCH = {"type": "object", "required": ["count", "results", "latency_ms"], "properties": {
    "count": INTEGER, "results": {"type": "array", "items": RESULT}, "latency_ms": LATENCY}}
LAYER = {"type": "object", "required": ["channels", "height", "width", "min", "max", "png"],
         "properties": {"channels": INTEGER, "height": INTEGER, "width": INTEGER, "min": NUMBER,
                        "max": NUMBER, "png": {"type": "array", "items": STRING},
                        "values": {"type": "array", "description": "C x H x W (values=true)"}}}
ACTIVATIONS = {"type": "object", "required": ["layers", "probabilities", "input", "latency_ms"],
               "properties": {"layers": {"type": "object", "additionalProperties": LAYER},
                              "probabilities": {"type": "object",
                                                "additionalProperties": NUMBER},
                              "input": SEEN, "latency_ms": LATENCY}}
MODEL = {"type": "object", "required": [
    "model", "recipe", "parameters", "input_size", "dataset", "classes", "epochs",
    "test_accuracy", "checkpoint", "checkpoint_sha256", "backend", "device", "ood", "limits"],
    "properties": {
        "model": STRING, "recipe": STRING, "parameters": INTEGER,
        "input_size": {"type": "array", "items": INTEGER}, "dataset": STRING,
        "classes": {"type": "array", "items": STRING}, "epochs": INTEGER,
        "test_accuracy": {"type": ["number", "null"]}, "checkpoint": STRING,
        "checkpoint_sha256": STRING, "backend": STRING, "device": STRING,
        "ood": {"type": ["object", "null"], "properties": {
            "detector": STRING, "threshold": NUMBER, "tpr": NUMBER}},
        "limits": {"type": "object", "properties": {
            "max_bytes": INTEGER, "max_pixels": INTEGER, "max_batch": INTEGER,
            "timeout_s": NUMBER}}}}
SAMPLE = {"type": "object", "required": ["split", "index", "label", "label_index", "png"],
          "properties": {"split": {"enum": ["test", "train"]}, "index": INTEGER,
                         "label": STRING, "label_index": INTEGER,
                         "png": {**STRING, "description": "base64 PNG"}}}
ALIVE = {"type": "object", "required": ["alive"], "properties": {"alive": {"const": True}}}
READY = {"type": "object", "required": ["ready", "backend"], "properties": {
    "ready": {"const": True}, "backend": STRING}}


def json_answer(schema: dict[str, Any], text: str = "OK") -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def operation(answer: dict[str, Any], *statuses: int, secured: bool,
              body: dict[str, Any] | None = None,
              params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An operation's `openapi_extra`: its 200 `answer`, the error `statuses` it can give
    (401 added, and the bearer scheme required, when the server has a token), its body and
    query parameters."""
    errors = sorted({*statuses, *((401,) if secured else ())})
    spec: dict[str, Any] = {"responses": {
        "200": answer, **{str(s): json_answer(ERROR, STATUS_TEXT[s]) for s in errors}}}
    if secured:
        spec["security"] = [{BEARER: []}]
    if body is not None:
        spec["requestBody"] = body
    if params is not None:
        spec["parameters"] = params
    return spec


# Every POST route reads a body: too slow, too large, not an image, not loaded.
POSTED = (400, 408, 413, 415, 503)


def complete(schema: dict[str, Any], secured: bool) -> dict[str, Any]:
    """FastAPI's schema with the shared parts: the error body, the bearer scheme."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    if secured:
        components["securitySchemes"] = {BEARER: {
            "type": "http", "scheme": "bearer",
            "description": "the token given to lenet serve --token (or $LENET_TOKEN)"}}
    return schema
