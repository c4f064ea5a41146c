"""Surfaces the object stands on: wood, carpet, rugs, counters, printed pages; and the
room behind an object held up in the air.

A surface is drawn flat, then tilted away from the camera with a perspective
warp, and sometimes topped by a wall or window behind the table edge, as in
the phone photos of the real dataset.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from bbc1k.synth.noise import blur_rgb, fractal_noise, pixel_grid, resize_map, smooth_noise


def _rgb(rng: np.random.Generator, rgb: tuple[int, int, int], spread: float = 0.12) -> np.ndarray:
    c = np.array(rgb, np.float32) / 255
    return np.clip(c * rng.uniform(1 - spread, 1 + spread) * rng.uniform(0.95, 1.05, 3), 0, 1).astype(np.float32)


def _rotated(w: int, h: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = pixel_grid(w, h)
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def _streaks(rng: np.random.Generator, w: int, h: int, along: float, across: float) -> np.ndarray:
    """Noise stretched along x: long fibres and grain lines."""
    grid = rng.standard_normal((max(2, int(h / across) + 2), max(2, int(w / along) + 2)), dtype=np.float32)
    return resize_map(grid, w, h)


def wood(rng: np.random.Generator, w: int, h: int, dark: bool = False) -> np.ndarray:
    """Plywood or varnished wood: long, gently warped grain lines and fibre streaks, sometimes planks."""
    base = _rgb(rng, (95, 62, 40) if dark else (222, 196, 158), 0.18)
    u, v = _rotated(w, h, rng.uniform(-0.3, 0.3) + (np.pi / 2 if rng.random() < 0.3 else 0))
    period = np.float32(rng.uniform(6, 30))
    warp = smooth_noise(rng, w, h, rng.uniform(120, 300)) * np.float32(rng.uniform(4, 14))
    warp += smooth_noise(rng, w, h, rng.uniform(30, 60)) * np.float32(rng.uniform(0.5, 2))
    rings = np.sin((v + warp) * np.float32(2 * np.pi) / period)
    rings = np.square(0.5 + 0.5 * rings)
    if rng.random() < 0.6:
        rings = np.square(rings)
    fibres = _streaks(rng, w, h, rng.uniform(20, 80), rng.uniform(1, 2.5))
    # Faint rings on plywood: the photos' light desks read as nearly plain at the network's
    # scale, where deeper rings looked like ripples.
    ring_depth = rng.uniform(0.03, 0.12) if dark else rng.uniform(0.01, 0.05)
    lum = 1 - np.float32(ring_depth) * rings + np.float32(rng.uniform(0.015, 0.04)) * fibres
    lum += np.float32(rng.uniform(0.02, 0.06)) * smooth_noise(rng, w, h, rng.uniform(80, 200))
    if dark or rng.random() < 0.2:
        plank = rng.uniform(50, 160)
        seams = np.abs(((v + 0.5 * plank) % plank) - 0.5 * plank) < rng.uniform(0.7, 1.6)
        lum[seams] *= 0.55
    tint = base * np.array([1.0, 0.97, 0.9], np.float32) * np.float32(rng.uniform(0.97, 1.03))
    return np.clip(lum[..., None] * tint, 0, 1)


def carpet(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Short-pile carpet or felt: fine grain with faint blotches."""
    base = _rgb(rng, [(170, 170, 168), (150, 140, 125), (120, 125, 135), (190, 185, 175)][rng.integers(4)], 0.2)
    grain = (rng.random((h, w), dtype=np.float32) - 0.5) * rng.uniform(0.14, 0.35)
    grain += smooth_noise(rng, w, h, rng.uniform(1.5, 3)) * rng.uniform(0.04, 0.08)
    lum = 1 + grain + rng.uniform(0.02, 0.06) * fractal_noise(rng, w, h, 60)
    return np.clip(base * lum[..., None], 0, 1)


def rug(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A two-colour patterned rug (lattice, quatrefoil, stripes or checks)."""
    pairs = [((120, 160, 200), (235, 235, 230)), ((60, 70, 110), (210, 200, 180)), ((170, 80, 60), (230, 210, 180)),
             ((90, 120, 90), (220, 220, 200)), ((60, 60, 60), (200, 200, 200))]
    a, b = pairs[rng.integers(len(pairs))]
    ca, cb = _rgb(rng, a), _rgb(rng, b)
    u, v = _rotated(w, h, rng.uniform(0, np.pi))
    k = 2 * np.pi / rng.uniform(40, 120)
    kind = rng.integers(3)
    if kind == 0:
        f = np.cos(k * u) + np.cos(k * v)
        line = np.abs(f) < rng.uniform(0.25, 0.6)
    elif kind == 1:
        line = np.sin(k * u) > rng.uniform(-0.3, 0.5)
    else:
        line = (np.sin(k * u) > 0) ^ (np.sin(k * v) > 0)
    t = line.astype(np.float32)[..., None]
    img = ca * t + cb * (1 - t)
    grain = 1 + rng.uniform(0.1, 0.25) * (rng.random((h, w, 1), dtype=np.float32) - 0.5)
    return np.clip(img * grain, 0, 1)


def plain(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Counters, tiles, paper, desk mats: near-uniform colours with faint texture or spots."""
    palette = [(235, 235, 232), (215, 210, 200), (190, 195, 200), (70, 70, 75), (40, 40, 45), (200, 170, 130),
               (120, 140, 160), (160, 180, 150)]
    base = _rgb(rng, palette[rng.integers(len(palette))], 0.15)
    lum = 1 + rng.uniform(0.01, 0.05) * fractal_noise(rng, w, h, rng.uniform(20, 120))
    img = base * lum[..., None]
    if rng.random() < 0.4:  # paint drops, dirt or a terrazzo pattern
        spots = rng.random((h, w), dtype=np.float32) < rng.uniform(0.001, 0.01)
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        img = np.where(spots[..., None], colour, img)
    if rng.random() < 0.3:  # tiles
        tile = rng.uniform(40, 120)
        xx, yy = pixel_grid(w, h)
        grout = ((xx % tile) < 2) | ((yy % tile) < 2)
        img = np.where(grout[..., None], img * 0.8, img)
    return np.clip(img, 0, 1)


SURFACES = {"wood": (wood, 0.55), "dark wood": (lambda r, w, h: wood(r, w, h, dark=True), 0.1),
            "carpet": (carpet, 0.16), "rug": (rug, 0.1), "plain": (plain, 0.22)}


def _perspective_coeffs(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) taking output points ``dst`` to input points ``src``."""
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(a, np.float64), np.array(b, np.float64)).tolist()


def tilt(img: np.ndarray, rng: np.random.Generator, w: int, h: int, squeeze: float) -> np.ndarray:
    """Warp a flat texture (at least w/squeeze wide) so that its top recedes: far is smaller."""
    th, tw = img.shape[:2]
    pic = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    top = tw * rng.uniform(0.9, 1.0)
    bottom = top / squeeze
    cx = tw / 2
    skew = rng.uniform(-0.5, 0.5) * (top - bottom)
    src = [(cx - top / 2, 0), (cx + top / 2, 0), (cx + bottom / 2 + skew, th - 1), (cx - bottom / 2 + skew, th - 1)]
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    out = pic.transform((w, h), Image.PERSPECTIVE, _perspective_coeffs(src, dst), Image.BILINEAR)
    return np.asarray(out, np.float32) / 255


def surface(rng: np.random.Generator, w: int, h: int, squeeze: float) -> np.ndarray:
    """A tabletop or floor filling the picture, seen at a slant (``squeeze`` >= 1: far/near width)."""
    names = list(SURFACES)
    p = np.array([SURFACES[k][1] for k in names])
    make = SURFACES[names[int(rng.choice(len(names), p=p / p.sum()))]][0]
    # Made at about 0.6 of the picture's resolution (the warp enlarges it) and capped in
    # width: the texture is the costliest part of a picture, and the photos' backgrounds
    # are soft anyway.
    tw = int(0.6 * w * min(squeeze, 1.7)) + 2
    th = int(0.6 * h * rng.uniform(0.9, 1.15)) + 2
    return tilt(make(rng, tw, th), rng, w, h, squeeze)


def backdrop(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Sometimes put a wall, window or dark room above a table edge across the top of the picture."""
    h, w = img.shape[:2]
    edge = rng.uniform(0.08, 0.4) * h
    slope = rng.uniform(-0.25, 0.25)
    xx, yy = pixel_grid(w, h)
    above = yy < edge + slope * (xx - w / 2)
    kind = rng.integers(3)
    if kind == 0:  # a pale wall
        wall = _rgb(rng, (225, 225, 222), 0.15) * (0.9 + 0.15 * (yy / h))[..., None]
    elif kind == 1:  # a bright, blurry window
        wall = np.clip(_rgb(rng, (235, 240, 240), 0.05) + 0.15 * smooth_noise(rng, w, h, 40)[..., None]
                       * np.array([-0.3, 0.2, -0.3], np.float32), 0, 1)
    else:  # a dark room
        wall = _rgb(rng, (60, 55, 50), 0.4) * (1 + 0.2 * smooth_noise(rng, w, h, 80))[..., None]
    lip = np.abs(yy - (edge + slope * (xx - w / 2))) < rng.uniform(1, 4)
    out = np.where(above[..., None], wall, img)
    return np.where(lip[..., None], out * 0.6, out).astype(np.float32)


def room(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Behind an object held up in the air: a window (sky, trees, its frame) or a wall with a
    door or shelf, out of focus, as the phone focused on the object."""
    xx, yy = pixel_grid(w, h)
    if rng.random() < 0.55:
        img = _rgb(rng, (228, 234, 238), 0.08) * np.ones((h, w, 1), np.float32)
        trees = np.clip(0.6 * fractal_noise(rng, w, h, rng.uniform(40, 120)) + rng.uniform(0.0, 0.7), 0, 1)
        img = img * (1 - trees[..., None]) + _rgb(rng, (95, 110, 75), 0.3) * trees[..., None]
        frame = _rgb(rng, ((240, 240, 236), (60, 50, 45), (150, 150, 150))[rng.integers(3)], 0.1)
    else:
        img = _rgb(rng, ((225, 222, 215), (200, 205, 210), (215, 200, 175))[rng.integers(3)], 0.12)
        img = img * (0.85 + 0.25 * (xx / w if rng.random() < 0.5 else yy / h))[..., None]
        frame = _rgb(rng, ((245, 245, 240), (120, 90, 60), (70, 70, 75))[rng.integers(3)], 0.1)
    for _ in range(int(rng.integers(1, 4))):
        at, width = rng.uniform(0, 1), rng.uniform(0.015, 0.06)
        bar = np.abs(xx / w - at) < width / 2 if rng.random() < 0.6 else np.abs(yy / h - at) < width / 2
        img = np.where(bar[..., None], frame, img)
    return blur_rgb(np.clip(img, 0, 1).astype(np.float32), rng.uniform(2, 6) * w / 512)
