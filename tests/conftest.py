"""Fixtures shared by every test folder.

* ``synthetic_dataset``: a small synthetic ``bbc_train`` (24 images, 128x96),
  made once per session. Read-only: copy it (``shutil.copytree``) to change it.
* ``tiny_models``: tiny real ONNX exports by role (classifier, detector,
  segmenter; see tests/tiny_onnx.py), made once per session, for the app and
  serving tests.
* ``http_server``: a real HTTP server on 127.0.0.1 in a thread, serving what a
  test registers (with Range support and scripted faults), recording every
  request. Tests never touch the internet.
"""
from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SYNTH_N = 24
SYNTH_SIZE = (128, 96)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a synthetic ``bbc_train`` (24 images of 128x96, seed 0, balanced classes)."""
    from bbc1k.synth import generate

    out = tmp_path_factory.mktemp("synthetic") / "bbc_train"
    return generate(out, n=SYNTH_N, seed=0, size=SYNTH_SIZE, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny real ONNX exports, by role (``classifier``, ``detector``, ``segmenter``)."""
    from tests.tiny_onnx import make_models  # torch: imported only by the tests that need these

    return make_models(tmp_path_factory.mktemp("tiny-models"))


@dataclass
class Route:
    """What the server answers for one path.

    ``ranges``: honour ``Range: bytes=N-`` with a 206 (False: always the whole body
    with a 200, as some servers do). ``drop_after``: send only that many body bytes
    of the next ``drops`` responses, then close the connection. ``content_length``:
    announce this length instead of the body's.
    """

    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    ranges: bool = True
    drop_after: int | None = None
    drops: int = 1
    content_length: int | None = None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LoopbackServer:
    base_url: str = ""
    routes: dict[str, Route | Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, path: str, body: bytes = b"", **options) -> str:
        """Serve ``body`` at ``path`` (see :class:`Route` for the options); returns its URL."""
        self.routes[path] = Route(body, **options)
        return self.url(path)

    def handle(self, path: str, handler: Handler) -> str:
        """Answer ``path`` with ``handler(request_handler)``; returns its URL."""
        self.routes[path] = handler
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base_url + path

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def _respond(self, h: BaseHTTPRequestHandler) -> None:
        path = urllib.parse.urlsplit(h.path).path
        with self._lock:
            self.requests.append(Request(h.command, path, dict(h.headers.items())))
            route = self.routes.get(path)
            if isinstance(route, Route) and route.drop_after is not None and route.drops > 0:
                route.drops -= 1
                drop_at = route.drop_after
            else:
                drop_at = None
        if route is None:
            return _send(h, 404, b"not found", "text/plain")
        if callable(route):
            return route(h)
        if route.status != 200:
            return _send(h, route.status, route.body, route.content_type)
        body, status, headers = route.body, 200, {}
        wanted = h.headers.get("Range", "")
        if route.ranges and wanted.startswith("bytes="):
            start = int(wanted[6:].split("-")[0] or 0)
            if start >= len(body):
                return _send(h, 416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body, status = body[start:], 206
        length = route.content_length if route.content_length is not None else len(body)
        if drop_at is not None:
            h.close_connection = True
            return _send(h, status, body[:drop_at], route.content_type, headers, length=len(body))
        if length != len(body):
            h.close_connection = True
        _send(h, status, body, route.content_type, headers, length=length)


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
          headers: dict[str, str] | None = None, length: int | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    h.send_header("Accept-Ranges", "bytes")
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)
        h.wfile.flush()


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 (ephemeral port); register content with
    ``http_server.serve(path, body, **Route options)`` and read ``http_server.requests``."""
    state = LoopbackServer()

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state._respond(self)

        do_HEAD = do_GET

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              name="loopback-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
