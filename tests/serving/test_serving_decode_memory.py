"""Memory of one decode is bounded by the pixel limit whatever the image mode:
a small 16-bit PNG of many pixels once took 37 bytes a pixel (float64 copies),
enough for one upload to kill a 512 MB instance."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

SIDE = 3000  # 9 MP: big enough that per-pixel costs dwarf the interpreter's noise
BYTES_PER_PIXEL = 6  # the widest native mode is 4 bytes a pixel; a palette image adds its RGBA copy
SLACK_MB = 40

# Decodes the file in a fresh interpreter and prints its peak RSS growth in MB.
PROBE = """
import resource, sys
from PIL import Image
from bbc1k.serving.decode import decode_image
data = open(sys.argv[1], "rb").read()
Image.MAX_IMAGE_PIXELS = None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = decode_image(data)
assert d.image.mode == "RGB" and max(d.image.size) <= 1024, (d.image.mode, d.image.size)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def _gradient() -> np.ndarray:
    return np.add.outer(np.arange(SIDE), np.arange(SIDE)).astype(np.uint32)


def _image(mode: str) -> tuple[Image.Image, str]:
    g = _gradient()
    if mode == "I;16":
        return Image.fromarray((g * 5).astype(np.uint16)), "PNG"
    if mode == "F":
        return Image.fromarray((g / g.max()).astype(np.float32)), "TIFF"
    rgb = Image.fromarray(np.stack([(g >> 5).astype(np.uint8)] * 3, -1))
    if mode == "RGBA":
        rgb.putalpha(128)
        return rgb, "PNG"
    if mode == "P":
        return rgb.convert("P"), "PNG"
    return rgb, "PNG"


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "P", "RGB"])
def test_decode_peak_memory_is_bounded_per_pixel(mode, tmp_path):
    im, fmt = _image(mode)
    path = tmp_path / f"big.{fmt.lower()}"
    im.save(path, fmt)
    r = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    grew_mb = float(r.stdout.strip())
    bound_mb = BYTES_PER_PIXEL * SIDE * SIDE / 2**20 + SLACK_MB
    assert grew_mb < bound_mb, f"{mode}: decoding {SIDE}x{SIDE} took {grew_mb:.0f} MB (bound {bound_mb:.0f} MB)"


def test_high_depth_brightness_survives_the_shrink():
    """A 16-bit image holding 8-bit values keeps its brightness; full range maps to 0..255."""
    from bbc1k.serving.decode import decode_image

    def decoded(a: np.ndarray) -> np.ndarray:
        import io

        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return np.asarray(decode_image(buf.getvalue(), work_side=64).image)

    low = decoded(np.full((300, 200), 100, np.uint16))
    assert low.shape == (64, 43, 3) or low.shape[0] == 64
    assert np.all(np.abs(low.astype(int) - 100) <= 1)
    ramp = decoded(np.tile(np.linspace(0, 65535, 400).astype(np.uint16), (100, 1)))
    assert ramp[:, 0].max() <= 3 and ramp[:, -1].min() >= 252
