"""What a request may send, and the one error type every route answers with."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 * MiB  # a request body; refused from Content-Length before reading
    max_pixels: int = 16_000_000  # an image, from its header, before decoding
    max_batch: int = 1024  # images in one /v1/predict/batch request
    timeout: float = 30.0  # seconds to read a request and answer it
    max_wait: float = 0.002  # seconds a single image waits for others to batch with
    max_queue: int = 8192  # images waiting for the model; more are refused (503)

    def describe(self) -> dict[str, float | int]:
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels,
                "max_batch": self.max_batch, "timeout_s": self.timeout}


class ApiError(Exception):
    """An answer other than 200: `{"error": error, "detail": detail}` with `status`."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def too_large(detail: str) -> ApiError:
    return ApiError(413, "too_large", detail)


def unsupported(detail: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", detail)


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail)
