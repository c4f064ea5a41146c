"""bbc1k.download against a real loopback HTTP server."""
from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from bbc1k import download as dl
from bbc1k.download import DownloadError, download, drive_url, probe

BODY = os.urandom(300_000)
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_BASE_S", 0.0)


def test_download_writes_checked_file_and_no_part(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    dest = tmp_path / "f.bin"
    assert download(url, dest, expected_size=len(BODY), sha256=DIGEST, progress=False) == dest
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "f.bin.part").exists()


def test_dropped_connection_resumes_with_range(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, drop_after=100_000)
    dest = download(url, tmp_path / "f.bin", sha256=DIGEST, progress=False)
    assert dest.read_bytes() == BODY
    ranges = [r.headers.get("Range") for r in http_server.requests_for("/f.bin")]
    assert ranges == [None, "bytes=100000-"]


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, drop_after=50_000, ranges=False)
    dest = download(url, tmp_path / "f.bin", expected_size=len(BODY), progress=False)
    assert dest.read_bytes() == BODY
    assert len(http_server.requests_for("/f.bin")) == 2


def test_existing_part_from_an_earlier_run_is_resumed(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    (tmp_path / "f.bin.part").write_bytes(BODY[:123_456])
    download(url, tmp_path / "f.bin", sha256=DIGEST, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert http_server.requests_for("/f.bin")[0].headers["Range"] == "bytes=123456-"


def test_transient_5xx_is_retried(http_server, tmp_path):
    calls = []

    def flaky(h):
        calls.append(1)
        body = b"busy" if len(calls) < 3 else BODY
        h.send_response(503 if len(calls) < 3 else 200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    url = http_server.handle("/f.bin", flaky)
    download(url, tmp_path / "f.bin", sha256=DIGEST, progress=False)
    assert len(calls) == 3 and (tmp_path / "f.bin").read_bytes() == BODY


def _assert_nothing_left(tmp_path):
    assert sorted(os.listdir(tmp_path)) == []


def test_404_names_url_and_leaves_nothing(http_server, tmp_path):
    url = http_server.url("/missing.zip")
    with pytest.raises(DownloadError) as e:
        download(url, tmp_path / "f.zip", progress=False)
    assert "404" in str(e.value) and url in str(e.value) and "mirror" in str(e.value)
    assert len(http_server.requests) == 1  # a 404 is not retried
    _assert_nothing_left(tmp_path)


@pytest.mark.parametrize("content_type, body", [
    ("text/html; charset=utf-8", b"<html><body>Google Drive - Quota exceeded</body></html>"),
    ("application/octet-stream", b"\n  <!DOCTYPE html><html><title>Sign in</title></html>"),
])
def test_html_page_is_refused(http_server, tmp_path, content_type, body):
    url = http_server.serve("/f.zip", body, content_type=content_type)
    with pytest.raises(DownloadError, match="HTML page"):
        download(url, tmp_path / "f.zip", progress=False)
    _assert_nothing_left(tmp_path)


def test_html_is_accepted_when_not_binary(http_server, tmp_path):
    url = http_server.serve("/page.html", b"<html></html>", content_type="text/html")
    assert download(url, tmp_path / "page.html", binary=False, progress=False).read_bytes() == b"<html></html>"


def test_announced_size_mismatch(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    with pytest.raises(DownloadError, match=r"size mismatch.*300,000.*expected 1,234"):
        download(url, tmp_path / "f.bin", expected_size=1234, progress=False)
    _assert_nothing_left(tmp_path)


def test_received_size_mismatch_without_content_length(http_server, tmp_path):
    def chunked(h):
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(BODY)
        h.close_connection = True

    url = http_server.handle("/f.bin", chunked)
    with pytest.raises(DownloadError, match=r"size mismatch: got 300,000 bytes, expected 300,001"):
        download(url, tmp_path / "f.bin", expected_size=len(BODY) + 1, progress=False)
    _assert_nothing_left(tmp_path)


def test_sha256_mismatch_names_both_digests(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as e:
        download(url, tmp_path / "f.bin", sha256=wrong, progress=False)
    assert wrong in str(e.value) and DIGEST in str(e.value)
    _assert_nothing_left(tmp_path)


def test_lying_content_length_gives_up_and_keeps_the_part(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY, content_length=len(BODY) + 10_000)
    with pytest.raises(DownloadError, match="gave up after 3 tries"):
        download(url, tmp_path / "f.bin", retries=2, progress=False)
    assert not (tmp_path / "f.bin").exists()
    assert (tmp_path / "f.bin.part").stat().st_size == len(BODY)  # kept: the next run resumes


def test_dns_failure_fails_at_once(monkeypatch, tmp_path):
    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError, match="DNS lookup of example.invalid failed"):
        download("http://example.invalid/x.zip", tmp_path / "x.zip", progress=False)
    assert len(calls) == 1
    assert "DNS lookup" in probe("http://example.invalid/x.zip")


def test_probe(http_server):
    assert probe(http_server.base_url + "/") is None
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "cannot connect" in probe(f"http://127.0.0.1:{port}/x", timeout=2)


def test_pinned_file_already_present_is_not_downloaded(http_server, tmp_path):
    (tmp_path / "f.bin").write_bytes(BODY)
    download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, progress=False)
    assert http_server.requests == []


@pytest.mark.parametrize("link", [
    "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view?usp=sharing",
    "https://drive.google.com/open?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "https://drive.google.com/uc?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345&export=download",
    "1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
])
def test_drive_url(link):
    assert drive_url(link) == ("https://drive.usercontent.google.com/download?"
                               "id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345&export=download&confirm=t")


def test_legacy_drive_id_is_recognised():
    assert "id=0B9aBcDeFgHiJkLmNoPqRsTuVwX&" in drive_url("0B9aBcDeFgHiJkLmNoPqRsTuVwX")


@pytest.mark.parametrize("link", ["http://www.welchlabs.io/unccv/deep_learning/bbc_train.zip", "model.onnx",
                                  "https://drive.google.com/drive/folders/",
                                  # folder names a Drive id's length could hide: ids are random tokens
                                  "models_final_v2", "models_final_version_2_for_production",
                                  "bbc-classifier-resnet34-2024-06-01", "BBC_CLASSIFIER_FINAL_VERSION_2"])
def test_drive_url_rejects_other_links(link):
    assert drive_url(link) is None


def _trickle(h, body: bytes, per_block: int, pause: float) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    try:
        for i in range(0, len(body), per_block):
            h.wfile.write(body[i:i + per_block])
            h.wfile.flush()
            time.sleep(pause)
    except OSError:  # the client gave up
        pass


def test_slow_download_stops_at_its_deadline_and_keeps_the_part(http_server, tmp_path):
    """A server sending 1 KB/s never trips a read timeout: the deadline bounds the whole download."""
    url = http_server.handle("/slow.bin", lambda h: _trickle(h, BODY, 1024, 0.05))
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download(url, tmp_path / "slow.bin", deadline=1.0, progress=False)
    took = time.monotonic() - t0
    assert took < 3, took
    assert "longer than 1 s" in str(e.value) and "of 300,000 bytes" in str(e.value)
    assert not (tmp_path / "slow.bin").exists()
    assert 0 < (tmp_path / "slow.bin.part").stat().st_size < len(BODY)  # resumable


def test_progress_is_reported(http_server, tmp_path):
    url = http_server.serve("/f.bin", BODY)
    seen = []
    download(url, tmp_path / "f.bin", progress=False, on_progress=lambda got, total: seen.append((got, total)))
    assert seen[-1] == (len(BODY), len(BODY))
    assert [g for g, _ in seen] == sorted(g for g, _ in seen) and len(seen) > 1
