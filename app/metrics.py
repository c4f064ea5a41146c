"""Prometheus metrics of one server (its own registry, so several apps in one
process never share counters) and the ASGI middleware that counts requests."""
from __future__ import annotations

import time

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # the *_created series only double the page

KNOWN_PATHS = ("/", "/analyze", "/healthz", "/readyz", "/metrics", "/api/models")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter("bbc1k_requests", "HTTP requests answered", ["path", "status"], registry=r)
        self.latency = Histogram("bbc1k_request_seconds", "Time to answer a request", ["path"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("bbc1k_batch_size", "Inputs per model forward pass", ["model"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.inference = Histogram("bbc1k_inference_seconds", "Time of one batched forward pass", ["model"],
                                   registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.queue_depth = Gauge("bbc1k_queue_depth", "Inputs waiting for a model", ["model"], registry=r)
        self.in_progress = Gauge("bbc1k_requests_in_progress", "/analyze requests being handled", registry=r)
        self.rejected = Counter("bbc1k_rejected", "Requests turned away", ["reason"], registry=r)

    def on_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model).observe(seconds)

    def on_depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP response by path and status, and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        label = path if path in KNOWN_PATHS else ("/static" if path.startswith("/static/") else "other")
        status = {"code": 500}
        started = time.perf_counter()

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(label, str(status["code"])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)
