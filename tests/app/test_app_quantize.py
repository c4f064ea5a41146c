"""int8 quantisation: the copy keeps its bbc1k description and stays close to
the float model; ``--quantize`` serves it (made once into the cache)."""
from __future__ import annotations

import httpx
import numpy as np
from conftest import jpeg_bytes, launch, post_image, wait_ready
from PIL import Image

from app.quantize import quantize
from bbc1k.modelmeta import read_onnx_meta
from bbc1k.serving import open_session, prepare, softmax
from bbc1k.synth import render_sample


def test_quantized_copy_keeps_description_and_outputs(tiny_models, tmp_path):
    src = tiny_models["classifier"]
    meta = read_onnx_meta(str(src))
    out = quantize(src, tmp_path / "q.onnx", meta)
    qmeta = read_onnx_meta(str(out))
    assert (qmeta.task, qmeta.classes, qmeta.input_size) == (meta.task, meta.classes, meta.input_size)
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = np.stack([prepare(render_sample(99, i)[0], meta)[0] for i in range(6)])
    p32 = softmax(open_session(src, threads=1).run(None, {"image": x})[0])
    p8 = softmax(open_session(out, threads=1).run(None, {"image": x})[0])
    assert np.abs(p32 - p8).max() < 0.05


def test_server_quantize_flag_serves_int8(tiny_models, tmp_path):
    s = wait_ready(launch(tmp_path, "--classifier", str(tiny_models["classifier"]), "--quantize"))
    try:
        (model,) = httpx.get(s.url + "/api/models").json()["models"]
        assert model["quantized"] is True and model["file"].endswith(".int8.onnx")
        assert list((tmp_path / "cache").glob("*.int8.onnx"))
        r = post_image(s.url, jpeg_bytes(Image.new("RGB", (80, 60), (10, 120, 200))))
        assert r.status_code == 200 and r.json()["classification"]["label"] in model["classes"]
    finally:
        s.stop()
