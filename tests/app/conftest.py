"""Fixtures of the app tests: tiny real ONNX models made by bbc1k.export, and
real servers (``python app/server.py serve``) on free loopback ports."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the app package lives at the repository root
    sys.path.insert(0, str(REPO))
SERVER = REPO / "app" / "server.py"
INPUT = 32
BOX = (-0.5, -0.5, 0.5, 0.5)  # the tiny detector's constant box, in [-1, 1] model-input units


def make_models(folder: Path) -> dict[str, Path]:
    """classifier (squish), classify+detect (crop, constant box) and segmenter
    (pad; class 3 where the red channel is bright, else background)."""
    import torch
    from torch import nn

    from bbc1k.export import export_onnx
    from bbc1k.modelmeta import ModelMeta, OutputSpec

    torch.manual_seed(0)
    classes = ["brick", "ball", "cylinder"]
    sample = torch.rand(2, 3, INPUT, INPUT)

    def features() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 3))

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = features()
            self.register_buffer("box", torch.tensor([BOX]))

        def forward(self, x):
            return self.head(x), x[:, :1, 0, 0] * 0 + self.box

    seg = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        seg.weight.zero_()
        seg.bias.copy_(torch.tensor([0.0, -5.0, -5.0, 0.0]))
        seg.weight[3, 0, 0, 0] = 10.0  # class 3 where normalised red > 0

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["classifier"] = export_onnx(features(), ModelMeta(
        task="classify", name="tiny-classifier", classes=classes, input_size=[INPUT, INPUT], resize="squish",
        outputs=[OutputSpec("logits", "class_logits", ["N", 3])]), folder / "classifier.onnx", sample)
    out["detector"] = export_onnx(Detector(), ModelMeta(
        task="classify+detect", name="tiny-detector", classes=classes, input_size=[INPUT, INPUT], resize="crop",
        outputs=[OutputSpec("logits", "class_logits", ["N", 3]),
                 OutputSpec("box", "box", ["N", 4], box_format="xyxy", box_range=[-1, 1])]),
        folder / "detector.onnx", sample)
    out["segmenter"] = export_onnx(seg, ModelMeta(
        task="segment", name="tiny-segmenter", classes=["background", *classes], input_size=[INPUT, INPUT],
        resize="pad", outputs=[OutputSpec("mask", "mask_logits", ["N", 4, INPUT, INPUT])]),
        folder / "segmenter.onnx", sample)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("tiny-models"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def launch(tmp: Path, *args: str, env: dict[str, str] | None = None, python: str = sys.executable) -> Server:
    """Start ``python app/server.py serve`` on a free port (not waiting)."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CLASSIFIER", "DETECTOR", "SEGMENTER", "MODEL_CACHE", "PORT", "HOST")}
    full_env.update({"MODEL_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1", **(env or {})})
    with open(log, "wb") as f:
        proc = subprocess.Popen([python, str(SERVER), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                                stdout=f, stderr=subprocess.STDOUT, env=full_env, cwd=tmp)
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
