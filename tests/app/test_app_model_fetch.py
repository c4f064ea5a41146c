"""Models given by URL are fetched once from a (loopback) web server and
checked; a model that cannot be fetched or loaded stops the server with one
clear line and a non-zero exit."""
from __future__ import annotations

import hashlib
import time
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
    line = error_lines(s.logs())[0]
    assert "absent.onnx: no such file" in line and "Drive id" not in line


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
    import app.fetch as fetch
    from app.config import ModelSource

    url, _ = web
    seen = []
    monkeypatch.setattr(fetch, "drive_url", lambda text: seen.append(text) or f"{url}/quota.html")
    link = "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz/view?usp=sharing"
    with pytest.raises(fetch.ModelError, match="HTML page.*Google Drive"):
        fetch.fetch(ModelSource("classifier", link), tmp_path / "cache")
    assert seen and seen[0] == link


def _serve_once_then(http_server, path: str, first, then: bytes) -> str:
    """``path`` answers ``first(handler)`` once, then ``then`` with a 200."""
    calls = []

    def answer(h):
        calls.append(1)
        if len(calls) == 1:
            return first(h)
        h.send_response(200)
        h.send_header("Content-Length", str(len(then)))
        h.end_headers()
        h.wfile.write(then)

    return http_server.handle(path, answer)


def _text_error(h):
    body = b"Error: the download quota for this file is used up; try again tomorrow\n"
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _cut_short_without_length(model: bytes):
    def answer(h):
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(model[: len(model) * 2 // 3])
        h.close_connection = True
    return answer


@pytest.mark.parametrize("first", ["text", "cut short"])
def test_a_bad_answer_is_not_cached_and_the_next_start_fetches_again(http_server, tmp_path, tiny_models, first):
    """Once a URL answered 200 with an error text or a cut-short body, every later start used to fail."""
    model = tiny_models["classifier"].read_bytes()
    bad = _text_error if first == "text" else _cut_short_without_length(model)
    url = _serve_once_then(http_server, "/classifier.onnx", bad, model)
    s = launch(tmp_path, "--classifier", url)
    assert wait_exit(s) != 0
    (line,) = error_lines(s.logs())
    assert "did not send a model" in line and "nothing was cached" in line, line
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "ort-optimized" not in str(p)]
    s = wait_ready(launch(tmp_path, "--classifier", url))  # the URL serves the model again
    s.stop()


def test_a_cached_file_that_does_not_load_is_fetched_again(web, tmp_path):
    from app.fetch import _cache_name

    url, _ = web
    source = f"{url}/classifier.onnx"
    cached = tmp_path / "cache" / _cache_name(source, None)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"left by an older version, or cut short by a full disk")
    s = wait_ready(launch(tmp_path, "--classifier", source))
    try:
        assert "does not load" in s.logs() and "fetching it again" in s.logs()
        assert httpx.get(s.url + "/api/models").json()["tasks"] == ["classify"]
    finally:
        s.stop()


def test_a_trickling_download_stops_at_the_load_timeout_with_progress_in_the_log(http_server, tmp_path,
                                                                                 tiny_models):
    model = tiny_models["classifier"].read_bytes() * 200  # 300 KB: far from done at 10 KB/s

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(model)))
        h.end_headers()
        try:
            for i in range(0, len(model), 1024):
                h.wfile.write(model[i:i + 1024])
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    url = http_server.handle("/slow.onnx", trickle)
    t0 = time.monotonic()
    s = launch(tmp_path, "--classifier", url, "--load-timeout", "6")
    health = None
    while health is None and time.monotonic() - t0 < 5:
        try:
            health = httpx.get(s.url + "/healthz", timeout=1)
        except httpx.HTTPError:
            time.sleep(0.1)
    assert health.status_code == 200 and health.json()["status"] == "starting"
    assert wait_exit(s, 30) != 0
    assert time.monotonic() - t0 < 20
    (line,) = error_lines(s.logs())
    assert "took longer than" in line and "classifier" in line, line
    assert "classifier: fetched" in s.logs()  # progress, every few seconds


def test_a_folder_name_is_not_taken_for_a_drive_id(tmp_path):
    s = launch(tmp_path, "--classifier", "models_final_version_2")
    assert wait_exit(s) != 0
    (line,) = error_lines(s.logs())
    assert "models_final_version_2: no such file" in line and "fetching" not in s.logs()


def test_healthz_says_stuck_once_loading_outlives_its_deadline():
    from app.config import Settings
    from app.service import Service

    svc = Service(Settings(load_timeout_s=0.05))
    assert svc.health()[0] == 200 and svc.health()[1]["status"] == "starting"
    time.sleep(0.1)
    status, body = svc.health()
    assert status == 503 and body["status"] == "stuck"
    svc.ready = True
    assert svc.health() == (200, {"status": "ok"})
