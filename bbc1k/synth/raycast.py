"""Ray-cast the one object of a synthetic photo: a brick, a ball or a cylinder.

Each object (:mod:`bbc1k.synth.shapes`) stands on the ground plane ``z = 0`` of
a small world seen by a pinhole camera. Rays are cast through 2 x 2 sub-pixels
of the object's screen box only, so the coverage of every pixel is exact up to
that sampling and the mask (coverage >= 1/2) is the object's true silhouette.
The same intersection code casts rays from the ground towards the light for the
object's shadow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bbc1k.synth.materials import Material
from bbc1k.synth.noise import blur_map, resize_map
from bbc1k.synth.shapes import EPS, Shape, footprint_distance, intersect

SS = 2  # sub-pixels per pixel side


@dataclass(frozen=True)
class Camera:
    position: np.ndarray
    forward: np.ndarray
    right: np.ndarray
    up: np.ndarray
    focal: float  # pixels
    centre: tuple[float, float]  # where the forward ray meets the image

    @classmethod
    def orbit(cls, target: np.ndarray, distance: float, elevation: float, azimuth: float, roll: float,
              focal: float, centre: tuple[float, float]) -> "Camera":
        ce = np.cos(elevation)
        forward = np.array([ce * np.sin(azimuth), ce * np.cos(azimuth), -np.sin(elevation)])
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        r2 = np.cos(roll) * right + np.sin(roll) * up
        u2 = -np.sin(roll) * right + np.cos(roll) * up
        return cls(target - distance * forward, forward, r2, u2, focal, centre)

    def project(self, points: np.ndarray) -> np.ndarray:
        v = points - self.position
        depth = v @ self.forward
        x = self.centre[0] + self.focal * (v @ self.right) / depth
        y = self.centre[1] - self.focal * (v @ self.up) / depth
        return np.stack([x, y], axis=-1)

    def rays(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Unit directions (N x 3, float32) through image points ``(xs, ys)``."""
        dx = (xs - self.centre[0]).astype(np.float32)
        dy = (ys - self.centre[1]).astype(np.float32)
        f, r, u = (v.astype(np.float32) for v in (self.forward, self.right, self.up))
        d = self.focal * f[None, :] + dx[:, None] * r[None, :] - dy[:, None] * u[None, :]
        return d / np.linalg.norm(d, axis=1, keepdims=True)


@dataclass(frozen=True)
class Light:
    direction: np.ndarray  # unit vector towards the light
    ambient: float
    diffuse: float


@dataclass
class Rendered:
    colour: np.ndarray  # H x W x 3 float32 of the window, valid where coverage > 0
    coverage: np.ndarray  # H x W float32 in 0..1
    window: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image


def screen_box(shape: Shape, cam: Camera) -> tuple[float, float, float, float]:
    p = cam.project(shape.corners())
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


def _cast(shape: Shape, cam: Camera, light: Light, material: Material, xs: np.ndarray, ys: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Hit flags and shaded colours of camera rays through image points ``(xs, ys)``."""
    d = cam.rays(xs, ys)
    pos = cam.position.astype(np.float32)
    t, normal = intersect(shape, pos, d)
    hit = np.isfinite(t)
    colour = np.zeros(d.shape, np.float32)
    if hit.any():
        colour[hit] = shade(pos + t[hit, None] * d[hit], normal[hit], -d[hit], shape, light, material)
    return hit, colour


def render_object(shape: Shape, cam: Camera, light: Light, material: Material, image_size: tuple[int, int]) -> Rendered:
    """Colour and coverage of the object in its (clipped) screen window.

    One ray per pixel centre finds the silhouette; pixels next to it are cast
    again with SS x SS sub-pixel rays for their coverage (interior pixels are
    fully covered, so sampling them again would change nothing).
    """
    w, h = image_size
    bx0, by0, bx1, by1 = screen_box(shape, cam)
    x0, y0 = max(0, int(np.floor(bx0)) - 1), max(0, int(np.floor(by0)) - 1)
    x1, y1 = min(w, int(np.ceil(bx1)) + 1), min(h, int(np.ceil(by1)) + 1)
    if x1 <= x0 or y1 <= y0:
        return Rendered(np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32), (0, 0, 0, 0))
    pw, ph = x1 - x0, y1 - y0
    gx, gy = np.meshgrid(x0 + np.arange(pw, dtype=np.float32) + 0.5, y0 + np.arange(ph, dtype=np.float32) + 0.5)
    hit, colour = _cast(shape, cam, light, material, gx.reshape(-1), gy.reshape(-1))
    hit, colour = hit.reshape(ph, pw), colour.reshape(ph, pw, 3)
    padded = np.pad(hit, 1)
    edge = np.zeros_like(hit)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= padded[1 + dy:1 + dy + ph, 1 + dx:1 + dx + pw] != hit
    cov = hit.astype(np.float32)
    ey, ex = np.nonzero(edge)
    if ey.size:
        sub = (np.arange(SS, dtype=np.float32) + 0.5) / SS
        sx = (ex[:, None, None] + x0 + sub[None, None, :]).astype(np.float32)
        sy = (ey[:, None, None] + y0 + sub[None, :, None]).astype(np.float32)
        sx, sy = np.broadcast_arrays(sx, sy)
        h2, c2 = _cast(shape, cam, light, material, sx.reshape(-1), sy.reshape(-1))
        h2 = h2.reshape(-1, SS * SS)
        n_hit = h2.sum(axis=1)
        cov[ey, ex] = n_hit / (SS * SS)
        colour[ey, ex] = c2.reshape(-1, SS * SS, 3).sum(axis=1) / np.maximum(n_hit, 1)[:, None]
    return Rendered(colour, cov, (x0, y0, x1, y1))


def shade(p: np.ndarray, n: np.ndarray, view: np.ndarray, shape: Shape, light: Light, material: Material) -> np.ndarray:
    """Lambert shading with a sky term, a soft highlight and contact darkening near the ground."""
    albedo = material.sample(p, n)
    ndl = np.clip(n @ light.direction.astype(np.float32), 0, 1)
    sky = 0.5 + 0.5 * n[:, 2]
    # Surfaces near the ground see less of the room: darker towards the contact line. Both
    # terms are faint: the room's walls and the table light the underside too (see
    # scene.AMBIENT for what the photos show).
    contact = 1 - 0.2 * np.exp(-p[:, 2] / (0.12 * shape.height + EPS))
    lum = (light.ambient * (0.85 + 0.15 * sky) * contact + light.diffuse * ndl)[:, None]
    half = light.direction.astype(np.float32)[None, :] + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = material.gloss * np.clip(np.einsum("ij,ij->i", n, half), 0, 1) ** material.shininess
    return albedo * lum + spec[:, None]


def render_shadow(shape: Shape, cam: Camera, light: Light, image_size: tuple[int, int], softness: float,
                  scale: int = 2) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Darkness (0..1) cast on the ground around the object, in a window of the image.

    The hard shadow comes from rays cast from the ground to the light; a blur
    makes it soft like the diffuse indoor light of the photos, and a contact
    term darkens the ground right under the object.
    """
    w, h = image_size
    bx0, by0, bx1, by1 = screen_box(shape, cam)
    size = max(bx1 - bx0, by1 - by0)
    pad = 0.9 * size
    x0, y0 = max(0, int(bx0 - pad)), max(0, int(by0 - pad))
    x1, y1 = min(w, int(bx1 + pad)), min(h, int(by1 + pad))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (0, 0, 0, 0)
    sw, sh = max(1, (x1 - x0) // scale), max(1, (y1 - y0) // scale)
    gx, gy = np.meshgrid(x0 + (np.arange(sw, dtype=np.float32) + 0.5) * (x1 - x0) / sw,
                         y0 + (np.arange(sh, dtype=np.float32) + 0.5) * (y1 - y0) / sh)
    d = cam.rays(gx.reshape(-1), gy.reshape(-1))
    pos = cam.position.astype(np.float32)
    tg = -pos[2] / np.minimum(d[:, 2], -EPS)
    ground = pos + tg[:, None] * d
    ts, _ = intersect(shape, ground, np.broadcast_to(light.direction.astype(np.float32), d.shape).copy())
    hard = np.isfinite(ts).astype(np.float32).reshape(sh, sw)
    soft = blur_map(hard, max(1.0, softness * size / scale))
    foot = footprint_distance(shape, ground).reshape(sh, sw)
    reach = 0.25 * max(shape.dims[0], shape.dims[1])
    contact = np.exp(-foot / max(reach, EPS))
    dark = np.clip(0.75 * soft + 0.6 * contact, 0, 1)
    return resize_map(dark, x1 - x0, y1 - y0), (x0, y0, x1, y1)
