"""SIGTERM with --drain (app/draining.py): /readyz turns 503 at once while
/analyze is still answered, then the server exits by itself; a second signal
ends the drain early; without --drain the server stops at once."""
from __future__ import annotations

import signal
import time

import httpx
from conftest import jpeg_bytes, launch, post_image, wait_exit, wait_ready
from PIL import Image

IMAGE = jpeg_bytes(Image.new("RGB", (64, 48), (120, 80, 40)))


def _readyz(url: str) -> tuple[int, dict]:
    r = httpx.get(url + "/readyz", timeout=5)
    return r.status_code, r.json()


def test_sigterm_drains_then_exits(tiny_models, tmp_path):
    s = wait_ready(launch(tmp_path, "--classifier", str(tiny_models["classifier"]), "--drain", "3"))
    try:
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _readyz(s.url) == (503, {"ready": False, "error": "shutting down"})
        answer = post_image(s.url, IMAGE, params={"tasks": "classify"})
        assert answer.status_code == 200 and "classification" in answer.json(), answer.text
        assert s.proc.poll() is None  # still serving while it drains
        assert wait_exit(s, 20) in (0, -signal.SIGTERM)
        took = time.monotonic() - t0
        assert 3 <= took < 10, took
        assert "draining for 3 s" in s.logs() and "Finished server process" in s.logs()
    finally:
        s.stop()


def test_a_second_signal_ends_the_drain(tiny_models, tmp_path):
    s = wait_ready(launch(tmp_path, "--classifier", str(tiny_models["classifier"]), "--drain", "30"))
    try:
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _readyz(s.url)[0] == 503
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        wait_exit(s, 10)
        assert time.monotonic() - t0 < 5
    finally:
        s.stop()


def test_without_drain_sigterm_stops_at_once(tiny_models, tmp_path):
    s = wait_ready(launch(tmp_path, "--classifier", str(tiny_models["classifier"])))
    try:
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        wait_exit(s, 10)
        assert time.monotonic() - t0 < 3
        assert "draining" not in s.logs()
    finally:
        s.stop()
