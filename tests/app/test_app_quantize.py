"""int8 by default: the server serves the int8 copy export wrote beside a model
(``X.int8.onnx`` made from ``X.onnx``), ``--float32`` forces the float32 model,
a copy not made from the model beside it is not served, and nothing is
quantised at start-up. ``python -m app quantize IN OUT`` writes a copy ahead."""
from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
from conftest import REPO, jpeg_bytes, launch, post_image, wait_ready
from PIL import Image

from bbc1k.modelmeta import read_onnx_meta
from bbc1k.quantize import INT8_KEY, int8_path, write_int8_copy


def _served(tmp_path, *args: str) -> dict:
    s = wait_ready(launch(tmp_path, *args))
    try:
        (model,) = httpx.get(s.url + "/api/models").json()["models"]
        r = post_image(s.url, jpeg_bytes(Image.new("RGB", (80, 60), (10, 120, 200))))
        assert r.status_code == 200 and r.json()["classification"]["label"] in model["classes"]
        model["log"] = s.logs()
        return model
    finally:
        s.stop()


def test_int8_copy_is_served_by_default_and_float32_on_request(tiny_models, tmp_path):
    src = tmp_path / "models" / "classifier.onnx"
    src.parent.mkdir()
    shutil.copy(tiny_models["classifier"], src)
    assert write_int8_copy(src, max_calibration=8).path == int8_path(src)
    model = _served(tmp_path / "a", "--classifier", str(src))
    assert model["quantized"] is True and model["file"] == "classifier.int8.onnx"
    assert model["float32_file"] == "classifier.onnx"
    assert not list((tmp_path / "a" / "cache").glob("*.int8.onnx"))  # nothing quantised at start
    model = _served(tmp_path / "b", "--classifier", str(src), "--float32")
    assert model["quantized"] is False and model["file"] == "classifier.onnx"
    # MODELS_DIR pairs the copy with its model instead of taking it for a second classifier
    model = _served(tmp_path / "c", "--models-dir", str(src.parent))
    assert model["quantized"] is True and model["role"] == "classifier"


def test_copy_not_made_from_the_model_beside_it_is_not_served(tiny_models, tmp_path):
    src = tmp_path / "classifier.onnx"
    shutil.copy(tiny_models["classifier"], src)
    write_int8_copy(src, max_calibration=8)
    shutil.copy(tiny_models["detector"], src)  # re-exported since: the copy is stale
    model = _served(tmp_path / "run", "--detector", str(src))
    assert model["quantized"] is False and model["file"] == "classifier.onnx"
    assert "was not made from classifier.onnx" in model["log"]


def test_quantize_command_writes_a_servable_copy(tiny_models, tmp_path):
    out = tmp_path / "q.onnx"
    photos = tmp_path / "photos" / "ball"
    photos.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 30), (60 * i, 90, 30)).save(photos / f"{i}.jpg")
    r = subprocess.run([sys.executable, "-m", "app", "quantize", str(tiny_models["segmenter"]), str(out),
                        "--images", str(tmp_path / "photos")], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    info = read_onnx_meta(str(out)).extra[INT8_KEY]
    assert info["calibration_images"] == 3 and info["calibration"] == "training images"
