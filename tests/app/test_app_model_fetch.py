"""Models given by URL are fetched once from a (loopback) web server and
checked; a model that cannot be fetched or loaded stops the server with one
clear line and a non-zero exit."""
from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import httpx
import pytest
from conftest import launch, wait_exit, wait_ready


@pytest.fixture
def web(tmp_path, tiny_models):
    """A loopback web server over a folder holding the classifier and an HTML page."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "classifier.onnx").write_bytes(tiny_models["classifier"].read_bytes())
    (root / "quota.html").write_text("<!DOCTYPE html><html><body>Too many users have viewed this file</body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "bbc1k-serve: error:" in line]


def test_fetch_with_right_sha256_serves_and_caches(web, tmp_path):
    url, root = web
    digest = sha256(root / "classifier.onnx")
    s = wait_ready(launch(tmp_path, env={"CLASSIFIER": f"{url}/classifier.onnx", "CLASSIFIER_SHA256": digest}))
    try:
        info = httpx.get(s.url + "/api/models").json()
        assert info["tasks"] == ["classify"] and info["models"][0]["name"] == "tiny-classifier"
        cached = [p for p in (tmp_path / "cache").iterdir() if p.is_file()]  # ort-optimized/ holds graphs
        assert [p.name for p in cached] == [f"sha256-{digest}"]
        assert sha256(cached[0]) == digest
    finally:
        s.stop()
    # A second start uses the cached copy: the web server no longer has the file.
    (root / "classifier.onnx").unlink()
    s = wait_ready(launch(tmp_path, "--classifier", f"{url}/classifier.onnx", "--classifier-sha256", digest))
    s.stop()


def test_wrong_sha256_exits_nonzero_with_one_clear_line(web, tmp_path):
    url, _ = web
    s = launch(tmp_path, "--classifier", f"{url}/classifier.onnx", "--classifier-sha256", "0" * 64)
    assert wait_exit(s) != 0
    lines = error_lines(s.logs())
    assert len(lines) == 1 and "sha256 mismatch" in lines[0] and "classifier" in lines[0], s.logs()
    assert not any(p.suffix == ".part" for p in (tmp_path / "cache").rglob("*"))


def test_html_page_instead_of_a_model_exits_nonzero(web, tmp_path):
    url, _ = web
    s = launch(tmp_path, env={"DETECTOR": f"{url}/quota.html"})
    assert wait_exit(s) != 0
    lines = error_lines(s.logs())
    assert len(lines) == 1 and "HTML page" in lines[0] and "detector" in lines[0], s.logs()


def test_missing_file_url_exits_nonzero(web, tmp_path):
    url, _ = web
    s = launch(tmp_path, "--segmenter", f"{url}/nope.onnx")
    assert wait_exit(s) != 0
    assert "HTTP 404" in error_lines(s.logs())[0]


def test_missing_local_path_exits_nonzero(tmp_path):
    s = launch(tmp_path, "--classifier", str(tmp_path / "absent.onnx"))
    assert wait_exit(s) != 0
    assert "neither an existing file" in error_lines(s.logs())[0]


def test_onnx_without_bbc1k_description_exits_nonzero(tmp_path, tiny_models):
    import onnx

    proto = onnx.load(str(tiny_models["classifier"]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    s = launch(tmp_path, "--classifier", str(bare))
    assert wait_exit(s) != 0
    assert "no 'bbc1k' description" in error_lines(s.logs())[0]


def test_model_in_the_wrong_role_exits_nonzero(tmp_path, tiny_models):
    s = launch(tmp_path, "--segmenter", str(tiny_models["classifier"]))
    assert wait_exit(s) != 0
    assert "cannot be the segmenter" in error_lines(s.logs())[0]


def test_pickle_is_refused_without_the_flag(tmp_path):
    import pickle

    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"not": "a learner"}))
    s = launch(tmp_path, "--classifier", str(pkl))
    assert wait_exit(s) != 0
    line = error_lines(s.logs())[0]
    assert "--allow-pickle" in line and "runs code" in line


def test_missing_optional_models_disable_their_tasks(tmp_path, tiny_models):
    s = wait_ready(launch(tmp_path, "--segmenter", str(tiny_models["segmenter"])))
    try:
        assert httpx.get(s.url + "/api/models").json()["tasks"] == ["segment"]
        r = httpx.post(s.url + "/analyze?tasks=classify", files={"file": ("a.jpg", b"x", "image/jpeg")})
        assert r.status_code == 400 and "not available" in r.json()["error"]
    finally:
        s.stop()


def test_detector_with_class_output_also_classifies(tmp_path, tiny_models):
    s = wait_ready(launch(tmp_path, "--detector", str(tiny_models["detector"])))
    try:
        assert httpx.get(s.url + "/api/models").json()["tasks"] == ["classify", "detect"]
    finally:
        s.stop()


def test_drive_link_answering_html_says_so(web, tmp_path, monkeypatch):
    """A Drive share link goes through drive_url(); its HTML page is named as Drive's."""
    import app.models as models
    from app.config import ModelSource

    url, _ = web
    seen = []
    monkeypatch.setattr(models, "drive_url", lambda text: seen.append(text) or f"{url}/quota.html")
    link = "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz/view?usp=sharing"
    with pytest.raises(models.ModelError, match="HTML page.*Google Drive"):
        models.fetch(ModelSource("classifier", link), tmp_path / "cache")
    assert seen and seen[0] == link
