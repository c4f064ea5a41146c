"""Cheap procedural noise and blur for the synthetic renderer (numpy + Pillow only).

Every map is float32; smooth noise is made by enlarging a small random grid
with Pillow's bicubic resize, which costs far less than per-pixel noise.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def resize_map(a: np.ndarray, w: int, h: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize a float32 2-D map to ``w`` x ``h``."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), "F").resize((w, h), resample))


def smooth_noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
    """Zero-mean noise of about unit spread whose features are ``cell`` pixels wide."""
    gw, gh = max(2, int(w / cell) + 2), max(2, int(h / cell) + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    return resize_map(grid, w, h)


def fractal_noise(rng: np.random.Generator, w: int, h: int, cell: float, octaves: int = 3, gain: float = 0.5) -> np.ndarray:
    """Sum of ``octaves`` smooth noises, each half the size and ``gain`` times the amplitude."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * smooth_noise(rng, w, h, cell)
        cell = max(1.0, cell / 2)
        amp *= gain
    return out


def blur_map(a: np.ndarray, radius: float) -> np.ndarray:
    """Soft blur of a float map: shrink by ``radius`` then enlarge (a cheap wide blur)."""
    if radius < 1:
        return a
    h, w = a.shape
    sw, sh = max(1, int(w / radius)), max(1, int(h / radius))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), "F").resize((sw, sh), Image.BOX))
    return resize_map(small, w, h, Image.BILINEAR)


def blur_rgb(img: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float RGB image in 0..1 (through 8 bits, which is plenty for a photo)."""
    if radius <= 0.05:
        return img
    pic = Image.fromarray(to_uint8(img), "RGB").filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(pic, dtype=np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def pixel_grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xx, yy)`` as float32 ``h`` x ``w`` arrays."""
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    return np.broadcast_to(xx, (h, w)), np.broadcast_to(yy, (h, w))
