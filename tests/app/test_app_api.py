"""Every endpoint of the running server, and the geometry of its answers."""
from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from conftest import jpeg_bytes, post_image
from PIL import Image


def red_left_half(w: int = 200, h: int = 100) -> Image.Image:
    im = Image.new("RGB", (w, h), (0, 0, 0))
    im.paste((250, 10, 10), (0, 0, w // 2, h))
    return im


def test_healthz_readyz(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "tasks": ["classify", "detect", "segment"]}


def test_page_and_static_files(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'id="file-input"' in r.text and "/static/app.js" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN: works offline
    for path in ("/static/app.js", "/static/style.css", "/static/examples/ball.jpg"):
        assert httpx.get(server.url + path).status_code == 200, path


def test_api_models_describes_the_loaded_models(server):
    info = httpx.get(server.url + "/api/models").json()
    assert info["ready"] is True
    assert info["tasks"] == ["classify", "detect", "segment"]
    by_role = {m["role"]: m for m in info["models"]}
    assert by_role["classifier"]["name"] == "tiny-classifier"
    assert by_role["detector"]["task"] == "classify+detect"
    assert by_role["segmenter"]["classes"] == ["background", "brick", "ball", "cylinder"]
    assert info["limits"]["max_upload_bytes"] == 10 * 1024 * 1024


def test_analyze_answers_all_tasks_in_image_pixels(server):
    r = post_image(server.url, jpeg_bytes(red_left_half()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 200, "height": 100, "format": "JPEG"}
    cls = body["classification"]
    assert set(cls["probabilities"]) == {"brick", "ball", "cylinder"}
    assert abs(sum(cls["probabilities"].values()) - 1) < 1e-6
    assert cls["label"] == max(cls["probabilities"], key=cls["probabilities"].get) == body["result"]
    # The tiny detector answers the box [-0.5, 0.5]^2 of its centre-cropped input:
    # the crop of a 200x100 image is the square x 50..150, so the box is x 75..125, y 25..75.
    det = body["detection"]
    assert det["box"] == [75.0, 25.0, 125.0, 75.0]
    assert det["label"] in ("brick", "ball", "cylinder")
    seg = body["segmentation"]
    assert (seg["width"], seg["height"]) == (200, 100)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg["png_base64"]))))
    assert mask.shape == (100, 200)
    # The tiny segmenter marks bright red pixels as class 3 (cylinder); padding stays outside.
    assert (mask[:, :95] == 3).all() and (mask[:, 105:] == 0).all()
    assert seg["fractions"]["cylinder"] == pytest.approx(0.5, abs=0.03)
    for role in ("classifier", "detector", "segmenter"):
        assert body["timings_ms"][role]["batch_size"] >= 1
    assert body["timings_ms"]["total"] > 0


def test_analyze_task_subset(server):
    data = jpeg_bytes(red_left_half())
    body = post_image(server.url, data, params={"tasks": "detect"}).json()
    assert body["tasks"] == ["detect"]
    assert "detection" in body and "classification" not in body and "segmentation" not in body
    body = post_image(server.url, data, params={"tasks": "segment,classify"}).json()
    assert body["tasks"] == ["classify", "segment"] and "detection" not in body


def test_analyze_unknown_task_is_400(server):
    r = post_image(server.url, jpeg_bytes(red_left_half()), params={"tasks": "classify,dance"})
    assert r.status_code == 400 and "dance" in r.json()["error"]


def test_exif_rotation_is_applied_to_answers(server):
    im = red_left_half(64, 32)  # stored landscape, EXIF orientation 6: shown portrait 32x64
    exif = Image.Exif()
    exif[0x0112] = 6
    body = post_image(server.url, jpeg_bytes(im, exif=exif.tobytes())).json()
    assert (body["image"]["width"], body["image"]["height"]) == (32, 64)
    assert (body["segmentation"]["width"], body["segmentation"]["height"]) == (32, 64)
    x0, y0, x1, y1 = body["detection"]["box"]
    assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 64
    # Rotated 90 degrees clockwise, the red left half becomes the top half.
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["segmentation"]["png_base64"]))))
    assert (mask[:28] == 3).mean() > 0.9 and (mask[36:] == 0).mean() > 0.9


def test_huge_image_is_downscaled_but_answered_in_its_pixels(server):
    im = red_left_half(6000, 4000)
    body = post_image(server.url, jpeg_bytes(im)).json()
    assert (body["image"]["width"], body["image"]["height"]) == (6000, 4000)
    assert max(body["segmentation"]["width"], body["segmentation"]["height"]) <= 1024
    x0, y0, x1, y1 = body["detection"]["box"]
    # crop of 6000x4000 is x 1000..5000: box [-0.5, 0.5] -> x 2000..4000, y 1000..3000
    assert abs(x0 - 2000) < 8 and abs(x1 - 4000) < 8 and abs(y0 - 1000) < 8 and abs(y1 - 3000) < 8


def test_metrics_in_prometheus_format(server):
    post_image(server.url, jpeg_bytes(red_left_half()))
    text = httpx.get(server.url + "/metrics").text
    assert 'bbc1k_requests_total{path="/analyze",status="200"}' in text
    assert "bbc1k_request_seconds_bucket" in text
    assert 'bbc1k_batch_size_count{model="classifier"}' in text
    assert 'bbc1k_queue_depth{model="segmenter"}' in text
    assert "process_resident_memory_bytes" in text


def test_unknown_route_and_wrong_method_answer_json(server):
    r = httpx.get(server.url + "/nope")
    assert r.status_code == 404 and r.json()["status"] == 404
    r = httpx.get(server.url + "/analyze")
    assert r.status_code == 405 and "error" in r.json()
