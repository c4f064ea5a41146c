"""bbc1k.serving on its own: fitting geometry, mode handling, CPU count,
shrinking while decoding, and no torch."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bbc1k.modelmeta import ModelMeta, OutputSpec
from bbc1k.serving import decode, postprocess, preprocess, runtime


def meta(resize: str, h: int = 32, w: int = 32) -> ModelMeta:
    return ModelMeta(task="detect", name="m", classes=["a"], input_size=[h, w], resize=resize,
                     outputs=[OutputSpec("box", "box", ["N", 4])])


@pytest.mark.parametrize("resize,expected", [
    ("squish", [0, 0, 200, 100]),
    ("crop", [50, 0, 150, 100]),   # centre square of a 200x100 image
    ("pad", [0, -50, 200, 150]),   # the padded square reaches past the top and bottom
])
def test_fit_maps_the_whole_input_back(resize, expected):
    fitted, fit = preprocess.fit_image(Image.new("RGB", (200, 100)), meta(resize))
    assert fitted.size == (32, 32)
    x0, y0 = fit.to_image(0, 0)
    x1, y1 = fit.to_image(32, 32)
    assert [x0, y0, x1, y1] == pytest.approx(expected, abs=1e-6)
    # box_to_image clips to the image and applies the upload scale
    box = postprocess.box_to_image(np.array([-1, -1, 1, 1]), fit, scale=(2.0, 2.0))
    assert box == pytest.approx([max(0, expected[0]) * 2, max(0, expected[1]) * 2,
                                 min(200, expected[2]) * 2, min(100, expected[3]) * 2])


def test_pad_leaves_black_borders_and_normalises():
    m = meta("pad")
    x, _ = preprocess.prepare(Image.new("RGB", (200, 100), (255, 255, 255)), m)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    black = (0 - np.array(m.mean)) / np.array(m.std)
    white = (1 - np.array(m.mean)) / np.array(m.std)
    assert x[:, 0, 0] == pytest.approx(black, abs=1e-5)  # padding row
    assert x[:, 16, 16] == pytest.approx(white, abs=1e-5)


def test_high_depth_modes_keep_their_range():
    signed = Image.fromarray(np.array([[-1000, 0], [500, 3000]], dtype=np.int32))
    assert signed.mode == "I"
    rgb = np.asarray(decode._to_rgb(signed))
    assert rgb[0, 0, 0] == 0 and rgb[1, 1, 0] == 255
    sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(decode._to_rgb(sixteen))[0, :, 0].tolist() == [0, 255]
    eight_in_16 = Image.fromarray(np.array([[0, 128]], dtype=np.uint16))
    assert np.asarray(decode._to_rgb(eight_in_16))[0, 1, 0] == 128
    nan = Image.fromarray(np.array([[np.nan, 0.5]], dtype=np.float32))
    assert np.asarray(decode._to_rgb(nan))[0, :, 0].tolist() == [0, 128]


def test_cgroup_quota_parsing():
    assert runtime._cgroup2_quota("max 100000") is None
    assert runtime._cgroup2_quota("150000 100000") == 1.5
    assert runtime._cgroup2_quota("garbage") is None
    assert 1 <= runtime.cpu_count() <= len(os.sched_getaffinity(0))


def test_jpeg_is_shrunk_while_decoding():
    big = Image.new("RGB", (4000, 3000), (10, 200, 30))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    d = decode.decode_image(buf.getvalue(), work_side=512)
    assert (d.width, d.height) == (4000, 3000)
    assert max(d.image.size) == 512
    assert d.scale == pytest.approx((4000 / 512, 3000 / 384))


def test_serving_imports_without_torch():
    """The slim serving image has no torch: bbc1k.serving may not import it (the app's
    own check: tests/app/test_app_fresh_venv.py)."""
    probe = ("import sys\n"
             "import bbc1k.serving\n"
             "heavy = sorted(m for m in ('torch', 'fastai', 'torchvision') if m in sys.modules)\n"
             "assert not heavy, heavy\n"
             "print('clean')")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "clean", r.stderr


def test_errors_carry_no_http_status():
    """Which HTTP status an unusable upload gets is the app's decision (app/errors.py)."""
    for cls in (decode.ImageError, decode.NotAnImage, decode.ImageTooLarge, decode.BadImage):
        assert issubclass(cls, ValueError) and not hasattr(cls, "status")
