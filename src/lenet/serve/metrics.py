"""Prometheus metrics (`GET /metrics`), in a registry of the app's own (not the process-wide
default, so two apps in one process, as in the tests, count apart)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

# Seconds: single images answer in about a millisecond, batches of 1,024 in tens.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lenet_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("lenet_request_duration_seconds",
                                 "Time from request to answer, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("lenet_requests_in_flight", "Requests being answered",
                               registry=r)
        self.images = Counter("lenet_images_classified", "Images the model classified",
                              registry=r)
        self.batches = Histogram("lenet_model_batch_size",
                                 "Images per model call (micro-batches and batch requests)",
                                 buckets=BATCH_BUCKETS, registry=r)
        self.ready = Gauge("lenet_model_ready", "1 once the model is loaded and warmed up",
                           registry=r)
        self.model = Info("lenet_model", "The model being served", registry=r)

    def describe_model(self, info: dict[str, Any]) -> None:
        self.model.info({k: str(v) for k, v in info.items()})

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def model_call(self, images: int) -> None:
        self.images.inc(images)
        self.batches.observe(images)

    def render(self) -> bytes:
        return generate_latest(self.registry)
