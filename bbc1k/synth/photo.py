"""What the phone adds: uneven light, white balance, metered exposure, blur and sensor noise.

(JPEG artefacts come from saving the picture with a varied quality.)
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from bbc1k.synth.noise import pixel_grid, resize_map, smooth_noise, to_uint8


# Auto-exposure: the picture's mean is moved towards ``METER_TARGET`` (mean, spread) by
# the power ``METER_STRENGTH`` of the ratio (0: none, 1: all the way). Without it, a
# quarter of the pictures were darker on average than 0.5, and 7% brighter than 0.8,
# where the photos have 16% and none; with it, 15% and 1%.
METER_TARGET = (0.62, 0.05)
METER_STRENGTH = (0.3, 0.7)


def light_field(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth brightness over the picture: a gradient, a vignette and soft patches.

    Worked out on a grid 8 times coarser and enlarged: it is smooth anyway."""
    fw, fh = w, h
    w, h = max(2, w // 8), max(2, h // 8)
    xx, yy = pixel_grid(w, h)
    a = rng.uniform(0, 2 * np.pi)
    ramp = ((xx / w - 0.5) * np.cos(a) + (yy / h - 0.5) * np.sin(a)) * rng.uniform(0.0, 0.5)
    r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) / 0.5
    vignette = -rng.uniform(0.0, 0.35) * r2
    patches = rng.uniform(0.0, 0.08) * smooth_noise(rng, w, h, rng.uniform(100, 250) / 8)
    return resize_map((1 + ramp + vignette + patches).astype(np.float32), fw, fh, Image.BILINEAR)


def develop(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Light field, white balance, exposure, contrast and saturation as a phone would apply them."""
    h, w = img.shape[:2]
    # Measured on the photos against the generator's pictures: the photos are nearly
    # neutral (red over blue 0.08 in mean, where the pictures had 0.15), half as
    # saturated, more contrasted and sharper, with less spread in exposure.
    warm = rng.normal(0.0, 0.04)
    green = rng.normal(0.0, 0.02)
    gains = np.array([1 + warm, 1 + green, 1 - warm], np.float32) * np.float32(rng.lognormal(0.03, 0.12))
    img = img * (light_field(rng, w, h)[..., None] * gains)
    # The phone meters the scene: a dark one is brightened and a bright one dimmed, part
    # of the way to a mid grey. Drawn from its own stream, so the rest stays the same.
    meter_rng = rng.spawn(1)[0]
    target, strength = meter_rng.normal(*METER_TARGET), meter_rng.uniform(*METER_STRENGTH)
    img = img * np.float32((target / (float(img.mean()) + 1e-3)) ** strength)
    gamma = rng.uniform(0.8, 1.2)
    if abs(gamma - 1) > 0.05:
        img = np.clip(img, 0, None) ** np.float32(gamma)
    # Saturation and contrast together: one linear mix of the pixel and its grey.
    sat = np.float32(rng.uniform(0.5, 0.9))
    contrast = np.float32(rng.uniform(0.95, 1.3))
    grey = img.mean(axis=2, keepdims=True)
    img = img * (sat * contrast) + grey * ((1 - sat) * contrast) + np.float32(0.5 - 0.5 * contrast)
    return np.clip(img, 0, 1, out=img)


def sensor(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lens softness and sensor noise (luma plus a little chroma): the final 8-bit picture."""
    radius = float(rng.choice([rng.uniform(0.0, 0.6), rng.uniform(0.6, 1.5)], p=[0.85, 0.15]))
    h, w = img.shape[:2]
    radius *= w / 512  # the same softness whatever the picture's resolution
    pic = Image.fromarray(to_uint8(img), "RGB")
    if radius > 0.05:
        pic = pic.filter(ImageFilter.GaussianBlur(radius))
    # Uniform integer noise: far cheaper than Gaussian and alike after JPEG.
    luma = int(rng.integers(1, 8))
    chroma = int(rng.integers(0, 3))
    noisy = np.asarray(pic, np.int16) + rng.integers(-luma, luma + 1, (h, w, 1), dtype=np.int16)
    if chroma:
        noisy += rng.integers(-chroma, chroma + 1, (h, w, 3), dtype=np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)
