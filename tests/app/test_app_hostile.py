"""Hostile traffic: oversized and slow request heads, uploads that trickle or
stall, SIGTERM during a slow upload, and the small things a review found
(405 without Allow, echoed input, missing security headers). Each test failed
on the server as it was before issue 12."""
from __future__ import annotations

import asyncio
import signal
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest
from conftest import jpeg_bytes, launch, post_image, wait_ready
from PIL import Image

HEADER_TIMEOUT = 1.0
UPLOAD_TIMEOUT = 1.5
IMAGE = jpeg_bytes(Image.new("RGB", (64, 48), (120, 200, 30)))


@pytest.fixture(scope="module")
def guarded(tiny_models, tmp_path_factory):
    s = wait_ready(launch(tmp_path_factory.mktemp("hostile"), "--classifier", str(tiny_models["classifier"]),
                          "--header-timeout", str(HEADER_TIMEOUT), "--upload-timeout", str(UPLOAD_TIMEOUT),
                          "--request-timeout", "20", "--max-queue", "2", "--max-upload-mb", "1"))
    yield s
    s.stop()


def connect(server) -> socket.socket:
    u = urlparse(server.url)
    return socket.create_connection((u.hostname, u.port), timeout=10)


def read_reply(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    reply = b""
    try:
        while part := sock.recv(65536):
            reply += part
    except (socket.timeout, ConnectionResetError):
        pass
    return reply


def slow_upload_head(length: int = 50_000) -> bytes:
    return (b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"a.jpg\"\r\n\r\n" % length)


def test_oversized_headers_are_refused_with_431(guarded):
    with connect(guarded) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n")
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    assert httpx.get(guarded.url + "/healthz").status_code == 200


def test_silent_connection_is_closed_after_the_header_timeout(guarded):
    with connect(guarded) as s:
        t0 = time.monotonic()
        assert read_reply(s, timeout=HEADER_TIMEOUT + 5) == b""
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 3


def test_trickled_request_head_gets_408(guarded):
    with connect(guarded) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < HEADER_TIMEOUT + 3:
                s.sendall(b"X")  # a header that never ends
                time.sleep(0.2)
        except OSError:  # closed by the server
            pass
        reply = read_reply(s, timeout=3)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]


def test_slow_uploads_hold_no_queue_slot_and_meet_a_deadline(guarded):
    """Four trickling uploads against a queue of two: a real request is still
    answered, and each slow one gets 408 at the upload deadline."""
    socks = []
    try:
        for _ in range(4):
            s = connect(guarded)
            s.sendall(slow_upload_head() + b"\xff\xd8\xff")
            socks.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        r = post_image(guarded.url, IMAGE)
        assert r.status_code == 200, r.text
        assert httpx.get(guarded.url + "/readyz").status_code == 200
        for s in socks:
            reply = read_reply(s, timeout=UPLOAD_TIMEOUT + 5)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b"did not arrive within 1.5 s" in reply
        assert time.monotonic() - t0 < UPLOAD_TIMEOUT + 4
    finally:
        for s in socks:
            s.close()


def test_oversized_chunked_upload_that_stalls_gets_413_without_a_traceback(guarded):
    with connect(guarded) as s:
        s.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        block = b"\xff" * 65536
        for _ in range(20):  # 1.25 MB: over the 1 MB limit, then nothing more
            s.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        reply = read_reply(s, timeout=15)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"larger than 1 MB" in reply
    assert "Traceback" not in guarded.logs()
    assert 'status="500"' not in httpx.get(guarded.url + "/metrics").text


def test_wrong_method_is_405_with_allow(guarded):
    r = httpx.get(guarded.url + "/analyze")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["status"] == 405


@pytest.mark.parametrize("tasks, words", [("classify," + "x" * 60_000, "unknown task"), (",,,", "names no task")])
def test_bad_tasks_are_400_and_not_echoed(guarded, tasks, words):
    r = post_image(guarded.url, IMAGE, params={"tasks": tasks})
    assert r.status_code == 400 and words in r.json()["error"]
    assert len(r.content) < 300


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/models", "/nope"])
def test_security_headers(guarded, path):
    h = httpx.get(guarded.url + path).headers
    csp = h["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"


def test_page_has_no_inline_script_or_style():
    """What the CSP forbids: inline <script>, on* handlers, style attributes."""
    import re

    from app.routes import STATIC

    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\son\w+\s*=", page) and " style=" not in page
    assert "style=" not in (STATIC / "app.js").read_text()


def test_sigterm_during_a_slow_upload_exits_within_the_shutdown_bound(tiny_models, tmp_path):
    s = wait_ready(launch(tmp_path, "--classifier", str(tiny_models["classifier"]), "--upload-timeout", "25",
                          "--request-timeout", "30", "--shutdown-timeout", "1"))
    try:
        with connect(s) as sock:
            sock.sendall(slow_upload_head())
            time.sleep(0.3)
            t0 = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            s.proc.wait(8)
            assert time.monotonic() - t0 < 4
    finally:
        s.stop()


def test_readyz_stays_200_while_analyze_is_overloaded(tiny_models, tmp_path):
    s = wait_ready(launch(tmp_path, "--classifier", str(tiny_models["classifier"]), "--max-batch", "64",
                          "--max-wait-ms", "2000", "--max-queue", "1"))

    async def burst() -> tuple[list[int], int]:
        async with httpx.AsyncClient(timeout=30) as c:
            posts = [c.post(s.url + "/analyze", files={"file": ("a.jpg", IMAGE, "image/jpeg")}) for _ in range(6)]
            pending = asyncio.gather(*posts)
            await asyncio.sleep(0.5)
            ready = (await c.get(s.url + "/readyz")).status_code
            return [r.status_code for r in await pending], ready

    try:
        codes, ready = asyncio.run(burst())
        assert 503 in codes and ready == 200
    finally:
        s.stop()
