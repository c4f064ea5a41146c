"""Concurrent requests: all answered, batched together, bounded by the queue
(503 + Retry-After) and by the request timeout (504)."""
from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from conftest import jpeg_bytes, launch, model_args, wait_ready
from PIL import Image

IMAGE = jpeg_bytes(Image.new("RGB", (64, 48), (120, 200, 30)))


async def _many(url: str, n: int, params: dict | None = None) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post(url + "/analyze", params=params,
                                                  files={"file": ("a.jpg", IMAGE, "image/jpeg")})
                                      for _ in range(n)))


@pytest.fixture
def start(tiny_models, tmp_path):
    started = []

    def go(*args: str):
        s = wait_ready(launch(tmp_path, *model_args(tiny_models), *args))
        started.append(s)
        return s

    yield go
    for s in started:
        s.stop()


def test_many_simultaneous_requests_are_answered_in_batches(start):
    # A long max wait lets the batch fill however slowly the clients arrive.
    s = start("--max-batch", "8", "--max-wait-ms", "1500", "--max-queue", "64")
    replies = asyncio.run(_many(s.url, 24))
    assert [r.status_code for r in replies] == [200] * 24
    sizes = [r.json()["timings_ms"]["classifier"]["batch_size"] for r in replies]
    assert max(sizes) > 1 and max(sizes) <= 8
    metrics = httpx.get(s.url + "/metrics").text
    count = float(re.search(r'bbc1k_batch_size_count\{model="classifier"\} (\S+)', metrics).group(1))
    total = float(re.search(r'bbc1k_batch_size_sum\{model="classifier"\} (\S+)', metrics).group(1))
    assert total == 24 and count < 24  # 24 images in fewer forward passes


def test_full_queue_answers_503_with_retry_after(start):
    # One request in progress at most; it waits 3 s for a batch that never fills.
    s = start("--max-batch", "64", "--max-wait-ms", "3000", "--max-queue", "1")
    replies = asyncio.run(_many(s.url, 8))
    codes = sorted(r.status_code for r in replies)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    busy = [r for r in replies if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"] for r in busy)
    assert 'bbc1k_rejected_total{reason="busy"}' in httpx.get(s.url + "/metrics").text
    # Still serving once the queue has drained.
    assert asyncio.run(_many(s.url, 1))[0].status_code == 200


def test_request_timeout_answers_504(start):
    s = start("--max-batch", "64", "--max-wait-ms", "5000", "--request-timeout", "0.5")
    r = asyncio.run(_many(s.url, 1))[0]
    assert r.status_code == 504 and "longer than" in r.json()["error"]
    assert httpx.get(s.url + "/healthz").status_code == 200
