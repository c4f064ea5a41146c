"""Bad uploads get a 4xx with a JSON message (never a 500) and the server
stays up; every Pillow mode and odd format is analysed."""
from __future__ import annotations

import socket
import struct
import zlib
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from conftest import encode, jpeg_bytes, post_image
from PIL import Image

from app.errors import IMAGE_ERROR_STATUS, image_error_status
from bbc1k.serving.decode import BadImage, ImageError, ImageTooLarge, NotAnImage

LIMIT = 10 * 1024 * 1024


def photo(w: int = 96, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims huge dimensions (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def assert_error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and words in body["error"].lower(), body


def test_each_image_error_has_its_status():
    """bbc1k.serving's errors carry no HTTP status: the app maps each class to one."""
    assert image_error_status(NotAnImage("x")) == 415
    assert image_error_status(ImageTooLarge("x")) == 413
    assert image_error_status(BadImage("x")) == 422
    assert image_error_status(ImageError("x")) == 422  # any other unusable upload
    assert set(IMAGE_ERROR_STATUS) == {NotAnImage, ImageTooLarge, BadImage}


def test_text_file_is_415(server):
    r = post_image(server.url, b"just some text, not an image\n" * 10, name="notes.txt", ctype="text/plain")
    assert_error(r, 415, "not an image")


def test_image_name_with_other_bytes_is_415(server):
    r = post_image(server.url, b"%PDF-1.4\n" + b"0" * 500, name="photo.jpg", ctype="image/jpeg")
    assert_error(r, 415, "not an image")


def test_empty_file_is_422(server):
    assert_error(post_image(server.url, b""), 422, "empty")


def test_truncated_jpeg_is_422(server):
    data = jpeg_bytes(photo(256, 256))
    assert_error(post_image(server.url, data[: len(data) // 2]), 422, "truncated")


def test_corrupt_png_is_422(server):
    data = bytearray(encode(Image.linear_gradient("L").resize((96, 64)), "PNG"))
    at = data.find(b"IDAT")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 6:at + 4 + size] = b"\xff" * (size - 2)  # the compressed pixels become garbage
    r = post_image(server.url, bytes(data), name="x.png", ctype="image/png")
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("side", [10_000, 20_000])  # over the 50 MP limit; over Pillow's own 2x bomb limit
def test_decompression_bomb_is_refused(server, side):
    r = post_image(server.url, png_header_only(side, side), name="bomb.png", ctype="image/png")
    assert_error(r, 413, "too large")


def test_no_file_field_is_400(server):
    r = httpx.post(server.url + "/analyze", files={"image": ("a.jpg", jpeg_bytes(photo()), "image/jpeg")})
    assert_error(r, 400, "field named 'file'")


def test_file_field_as_text_is_400(server):
    r = httpx.post(server.url + "/analyze", data={"file": "hello"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert_error(r, 400, "must be a file")


def test_two_files_are_400(server):
    data = jpeg_bytes(photo())
    r = httpx.post(server.url + "/analyze", files=[("file", ("a.jpg", data, "image/jpeg")),
                                                   ("file", ("b.jpg", data, "image/jpeg"))])
    assert_error(r, 400, "one image")


def test_not_multipart_is_415(server):
    r = httpx.post(server.url + "/analyze", content=jpeg_bytes(photo()), headers={"content-type": "image/jpeg"})
    assert_error(r, 415, "multipart")


def test_broken_multipart_is_400(server):
    r = httpx.post(server.url + "/analyze", content=b"--x\r\nnonsense",
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400, r.text


def test_content_length_over_limit_is_413_before_the_body(server):
    """The header alone is enough: the server answers without waiting for the body."""
    u = urlparse(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: %d\r\n\r\n" % (LIMIT + 1))
        reply = b""
        while b"\r\n\r\n" not in reply:
            part = s.recv(4096)
            if not part:
                break
            reply += part
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_streamed_body_over_limit_is_413(server):
    """No Content-Length (chunked): the bytes actually read are counted."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'

    def body():
        yield head
        block = b"\xff" * (256 * 1024)
        for _ in range(LIMIT // len(block) + 2):
            yield block
        yield b"\r\n--b--\r\n"

    r = httpx.post(server.url + "/analyze", content=body(), timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "larger than 10 mb")


def test_big_upload_with_content_length_is_413(server):
    data = b"\xff\xd8" + b"\0" * (LIMIT + 10)
    try:
        r = post_image(server.url, data)
    except httpx.WriteError:
        pytest.skip("the server answered before the client finished writing (allowed by HTTP)")
    assert_error(r, 413, "larger than")


def gif_two_frames() -> bytes:
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def mode_images() -> dict[str, tuple[bytes, str]]:
    rgb = photo()
    arr16 = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    return {
        "CMYK jpeg": (encode(rgb.convert("CMYK"), "JPEG"), "image/jpeg"),
        "CMYK tiff": (encode(rgb.convert("CMYK"), "TIFF"), "image/tiff"),
        "RGBA png": (encode(rgba, "PNG"), "image/png"),
        "P png transparent": (encode(pal, "PNG"), "image/png"),
        "LA png": (encode(rgb.convert("LA"), "PNG"), "image/png"),
        "L png": (encode(rgb.convert("L"), "PNG"), "image/png"),
        "I;16 png": (encode(Image.fromarray(arr16), "PNG"), "image/png"),
        "1 bmp": (encode(rgb.convert("1"), "BMP"), "image/bmp"),
        "F tiff": (encode(Image.fromarray(np.linspace(0, 1, 96 * 64, dtype=np.float32).reshape(64, 96)),
                          "TIFF"), "image/tiff"),
        "animated gif": (gif_two_frames(), "image/gif"),
        "webp": (encode(rgb, "WEBP"), "image/webp"),
        "progressive jpeg": (encode(rgb, "JPEG", progressive=True), "image/jpeg"),
    }


@pytest.mark.parametrize("name", list(mode_images()))
def test_every_pillow_mode_is_analysed(server, name):
    data, ctype = mode_images()[name]
    r = post_image(server.url, data, name="img", ctype=ctype)
    assert r.status_code == 200, (name, r.text)
    body = r.json()
    expect = (40, 30) if name == "animated gif" else (96, 64)
    assert (body["image"]["width"], body["image"]["height"]) == expect
    assert body["classification"]["label"] in ("brick", "ball", "cylinder")


def test_server_survives_the_bad_uploads(server):
    # Runs after the tests above in this module: still alive, no 500 counted.
    assert httpx.get(server.url + "/healthz").status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    assert 'status="500"' not in metrics
    assert post_image(server.url, jpeg_bytes(photo())).status_code == 200
