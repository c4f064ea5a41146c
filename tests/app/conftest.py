"""Fixtures of the app tests: real servers (``python app/server.py serve``) on
free loopback ports, over the tiny real ONNX models of tests/conftest.py
(``tiny_models``)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "app" / "server.py"


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def launch(tmp: Path, *args: str, env: dict[str, str] | None = None, python: str = sys.executable,
           entry: tuple[str, ...] = (str(SERVER),), cwd: Path | None = None) -> Server:
    """Start ``python app/server.py serve`` (or ``python *entry serve``, e.g.
    ``entry=("-m", "app")``) on a free port, in ``cwd`` (default ``tmp``), not waiting."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CLASSIFIER", "DETECTOR", "SEGMENTER", "MODEL_CACHE", "PORT", "HOST")}
    full_env.update({"MODEL_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1", **(env or {})})
    with open(log, "wb") as f:
        proc = subprocess.Popen([python, *entry, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                                stdout=f, stderr=subprocess.STDOUT, env=full_env, cwd=cwd or tmp)
    return Server(proc, f"http://127.0.0.1:{port}", log)


def wait_ready(server: Server, timeout: float = 120) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server not ready within {timeout} s:\n{server.logs()}")


def wait_exit(server: Server, timeout: float = 120) -> int:
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError(f"server did not exit within {timeout} s:\n{server.logs()}") from None


def model_args(models: dict[str, Path]) -> list[str]:
    return [a for role, path in models.items() for a in (f"--{role}", str(path))]


@pytest.fixture(scope="session")
def server(tiny_models, tmp_path_factory):
    """One server with all three tiny models."""
    s = wait_ready(launch(tmp_path_factory.mktemp("server"), *model_args(tiny_models)))
    yield s
    s.stop()


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def post_image(url: str, data: bytes, *, name: str = "photo.jpg", ctype: str = "image/jpeg",
               params: dict | None = None, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + "/analyze", files={"file": (name, data, ctype)}, params=params, timeout=timeout)
