"""Ray-cast the one object of a synthetic photo: a brick, a ball or a cylinder.

Each object stands on the ground plane ``z = 0`` of a small world seen by a
pinhole camera. Rays are cast through 2 x 2 sub-pixels of the object's screen
box only, so the coverage of every pixel is exact up to that sampling and the
mask (coverage >= 1/2) is the object's true silhouette. The same intersection
code casts rays from the ground towards the light for the object's shadow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bbc1k.synth_materials import Material
from bbc1k.synth_noise import blur_map, resize_map

SS = 2  # sub-pixels per pixel side
_EPS = 1e-6


@dataclass(frozen=True)
class Shape:
    kind: str  # "box", "sphere" or "cylinder"
    dims: tuple[float, float, float]  # box: half extents x, y, z; sphere: (r, r, r); cylinder: (r, r, height)

    @property
    def height(self) -> float:
        return 2 * self.dims[2] if self.kind != "cylinder" else self.dims[2]

    def corners(self) -> np.ndarray:
        """Corners of the world-space bounding box (8 x 3)."""
        a, b, _ = self.dims
        xs, ys, zs = (-a, a), (-b, b), (0.0, self.height)
        return np.array([(x, y, z) for x in xs for y in ys for z in zs], np.float64)


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


def intersect(shape: Shape, origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest positive hit distance (inf where missed) and unit normals of rays ``origin + t d``."""
    o = np.broadcast_to(origin, d.shape).astype(np.float32)
    n = np.zeros_like(d)
    if shape.kind == "sphere":
        r = shape.dims[0]
        oc = o - np.array([0, 0, r], np.float32)
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - r * r
        disc = b * b - c
        t = -b - np.sqrt(np.maximum(disc, 0))
        t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
        n = (o + t[:, None] * d - np.array([0, 0, r], np.float32)) / r
    elif shape.kind == "cylinder":
        r, _, hgt = shape.dims
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
        disc = b * b - a * c
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, _EPS)
        zs = o[:, 2] + ts * d[:, 2]
        ts = np.where((disc >= 0) & (ts > _EPS) & (zs >= 0) & (zs <= hgt), ts, np.inf)
        safe_dz = np.where(np.abs(d[:, 2]) < _EPS, -_EPS, d[:, 2])
        tt = (hgt - o[:, 2]) / safe_dz
        px, py = o[:, 0] + tt * d[:, 0], o[:, 1] + tt * d[:, 1]
        tt = np.where((tt > _EPS) & (px * px + py * py <= r * r), tt, np.inf)
        top = tt < ts
        t = np.minimum(ts, tt)
        hit = o + np.where(np.isfinite(t), t, 0)[:, None] * d
        n[:, 0] = np.where(top, 0, hit[:, 0] / r)
        n[:, 1] = np.where(top, 0, hit[:, 1] / r)
        n[:, 2] = np.where(top, 1, 0)
    else:
        half = np.array(shape.dims, np.float32)
        centre = np.array([0, 0, half[2]], np.float32)
        safe_d = np.where(np.abs(d) < _EPS, _EPS, d)
        t1 = (-half - (o - centre)) / safe_d
        t2 = (half - (o - centre)) / safe_d
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = np.argmax(near, axis=1)
        tmin, tmax = near.max(axis=1), far.min(axis=1)
        t = np.where((tmin <= tmax) & (tmin > _EPS), tmin, np.inf)
        rows = np.arange(len(d))
        n[rows, axis] = -np.sign(d[rows, axis])
    return t, n


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
    albedo = material.sample(p, n, shape)
    ndl = np.clip(n @ light.direction.astype(np.float32), 0, 1)
    sky = 0.5 + 0.5 * n[:, 2]
    # Surfaces near the ground see less of the room: darker towards the contact line.
    contact = 1 - 0.35 * np.exp(-p[:, 2] / (0.12 * shape.height + _EPS))
    lum = (light.ambient * (0.55 + 0.45 * sky) * contact + light.diffuse * ndl)[:, None]
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
    tg = -pos[2] / np.minimum(d[:, 2], -_EPS)
    ground = pos + tg[:, None] * d
    ts, _ = intersect(shape, ground, np.broadcast_to(light.direction.astype(np.float32), d.shape).copy())
    hard = np.isfinite(ts).astype(np.float32).reshape(sh, sw)
    soft = blur_map(hard, max(1.0, softness * size / scale))
    foot = _footprint_distance(shape, ground).reshape(sh, sw)
    reach = 0.25 * max(shape.dims[0], shape.dims[1])
    contact = np.exp(-foot / max(reach, _EPS))
    dark = np.clip(0.75 * soft + 0.6 * contact, 0, 1)
    return resize_map(dark, x1 - x0, y1 - y0), (x0, y0, x1, y1)


def _footprint_distance(shape: Shape, g: np.ndarray) -> np.ndarray:
    """Ground distance from points ``g`` to where the object touches the ground."""
    if shape.kind == "sphere":
        return np.hypot(g[:, 0], g[:, 1])
    if shape.kind == "cylinder":
        return np.maximum(np.hypot(g[:, 0], g[:, 1]) - shape.dims[0], 0)
    dx = np.maximum(np.abs(g[:, 0]) - shape.dims[0], 0)
    dy = np.maximum(np.abs(g[:, 1]) - shape.dims[1], 0)
    return np.hypot(dx, dy)
