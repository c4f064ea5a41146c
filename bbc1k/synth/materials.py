"""Surface materials of the synthetic objects: procedural albedo textures.

The real objects are a paving brick (red clay or grey/tan concrete, porous and
speckled), a papier-mache ball (tan, matte, with the creases of its pasted
strips) and a round card box (tan, smooth). Textures live on the object
(triplanar lookup by world position), so pits, blotches and creases stay put on
a face and shrink with perspective like real ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from bbc1k.synth.noise import blur_map, fractal_noise

TEX = 128  # texels per texture side


@dataclass(frozen=True)
class Material:
    texture: np.ndarray  # TEX x TEX x 3 float32 albedo
    texel: float  # world units per texel
    gloss: float
    shininess: float
    band: tuple[float, float, float] | None = None  # cylinder lid seam: (z from, z to, darkening)

    def sample(self, p: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Albedo at surface points ``p`` with normals ``n`` (triplanar blend)."""
        wts = np.abs(n) ** 4
        wts /= wts.sum(axis=1, keepdims=True) + 1e-6
        idx = (p / self.texel).astype(np.int64)
        flat = self.texture.reshape(-1, 3)
        out = np.zeros_like(p)
        # Each plane reads a different part of the texture so opposite faces differ.
        for axis, (a, b), shift in ((0, (1, 2), 0), (1, (0, 2), 97), (2, (0, 1), 173)):
            texel = ((idx[:, b] + 2 * shift) % TEX) * TEX + (idx[:, a] + shift) % TEX
            out += wts[:, axis, None] * flat[texel]
        if self.band is not None:
            z0, z1, dark = self.band
            side = np.abs(n[:, 2]) < 0.5
            in_band = side & (p[:, 2] >= z0) & (p[:, 2] <= z1)
            out[in_band] *= dark
        return out


def _texture(rng: np.random.Generator, base: np.ndarray, mottle: float, mottle_cell: float, speckle: float,
             pits: float, pit_depth: float, flecks: float, tint: float) -> np.ndarray:
    """Albedo texture: blotches, per-texel grain, dark pores and light flecks around ``base``."""
    lum = 1 + mottle * fractal_noise(rng, TEX, TEX, mottle_cell, octaves=3)
    lum += speckle * rng.standard_normal((TEX, TEX), dtype=np.float32)
    pores = (rng.random((TEX, TEX), dtype=np.float32) < pits).astype(np.float32)
    pores = np.maximum(pores, 0.6 * blur_map(pores, 2) * (rng.random() < 0.5))
    lum -= pit_depth * pores
    light = (rng.random((TEX, TEX), dtype=np.float32) < flecks).astype(np.float32)
    lum += 0.25 * light
    hue = tint * fractal_noise(rng, TEX, TEX, mottle_cell * 1.5, octaves=2)
    tex = base[None, None, :] * lum[..., None]
    tex = tex * (1 + hue[..., None] * np.array([1.0, 0.2, -0.8], np.float32))
    return np.clip(tex, 0.02, 1.0).astype(np.float32)


def _creases(rng: np.random.Generator, tex: np.ndarray) -> np.ndarray:
    """Thin light and dark lines: the edges and creases of papier-mache strips.

    With blotches and pits instead, balls looked like the moon, and the photos'
    balls (smooth, creased) read as bricks.
    """
    lines = Image.new("F", (TEX, TEX), 0.0)
    draw = ImageDraw.Draw(lines)
    for _ in range(int(rng.integers(15, 45))):
        p = rng.uniform(0, TEX, 2)
        pts = [tuple(p)]
        a = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 6))):
            a += rng.normal(0, 0.5)
            p = p + rng.uniform(4, 14) * np.array([np.cos(a), np.sin(a)])
            pts.append(tuple(p))
        draw.line(pts, fill=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.06, 0.16)), width=1)
    return np.clip(tex * (1 + np.asarray(lines, np.float32))[..., None], 0.02, 1.0).astype(np.float32)


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], spread: float) -> np.ndarray:
    c = np.array(rgb, np.float32) / 255
    return np.clip(c * rng.uniform(1 - spread, 1 + spread) * rng.uniform(0.94, 1.06, 3), 0, 1).astype(np.float32)


# Base colours read off the photos, side by side with the generator's pictures.
# Most bricks are grey concrete pavers with pale flecks; the rest a red-brown
# paver, a salmon clay brick or tan concrete. The ball and the cylinder are
# the same tan papier-mache and card, paler under bright light: between them
# only the shape tells.
BRICK_COLOURS = {
    "grey concrete": ((150, 148, 142), 0.5),
    "red-brown paver": ((146, 80, 66), 0.25),
    "red clay": ((196, 120, 108), 0.18),
    "khaki concrete": ((160, 152, 132), 0.07),
}
PAPER_COLOURS = {"tan papier-mache": ((214, 193, 158), 0.8), "pale card": ((232, 222, 200), 0.2)}


def _pick(rng: np.random.Generator, table: dict) -> tuple[str, tuple[int, int, int]]:
    names = list(table)
    p = np.array([table[k][1] for k in names])
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    return name, table[name][0]


def brick_material(rng: np.random.Generator, extent: float) -> Material:
    name, rgb = _pick(rng, BRICK_COLOURS)
    base = _jitter(rng, rgb, 0.18)
    concrete = name != "red clay"
    tex = _texture(
        rng, base,
        # Faint blotches and shallow pores under the grain: at the network's scale the
        # photos' bricks are finely speckled, nearly even; deeper ones looked mottled.
        mottle=rng.uniform(0.02, 0.06), mottle_cell=rng.uniform(6, 20),
        speckle=rng.uniform(0.05, 0.14) if concrete else rng.uniform(0.03, 0.08),
        pits=rng.uniform(0.01, 0.06), pit_depth=rng.uniform(0.15, 0.35),
        flecks=rng.uniform(0.01, 0.06) if concrete else rng.uniform(0.0, 0.015),
        tint=rng.uniform(0.0, 0.05),
    )
    return Material(tex, extent / TEX * rng.uniform(0.6, 1.4), gloss=rng.uniform(0.0, 0.04), shininess=8.0)


def paper_material(rng: np.random.Generator, extent: float, seam_height: float | None = None) -> Material:
    """The papier-mache ball (smooth, creased) or, with ``seam_height``, the round
    card box of the cylinder: smooth, with its lid's seam."""
    name, rgb = _pick(rng, PAPER_COLOURS)
    base = _jitter(rng, rgb, 0.12)
    tex = _texture(
        rng, base,
        mottle=rng.uniform(0.01, 0.03), mottle_cell=rng.uniform(5, 20),
        speckle=rng.uniform(0.005, 0.015), pits=0.0, pit_depth=0.0,
        flecks=0.0, tint=rng.uniform(0.0, 0.02),
    )
    if seam_height is None:  # the ball
        tex = _creases(rng, tex)
    band = None
    if seam_height is not None and rng.random() < 0.6:
        z = seam_height * rng.uniform(0.7, 0.9)
        band = (z, z + seam_height * rng.uniform(0.01, 0.03), rng.uniform(0.6, 0.85))
    return Material(tex, extent / TEX * rng.uniform(0.5, 1.5), gloss=rng.uniform(0.0, 0.05), shininess=6.0, band=band)
