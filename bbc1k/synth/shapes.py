"""The object's geometry: a box, a sphere or a cylinder standing on the ground plane ``z = 0``.

``intersect`` finds where rays meet the object; the camera's rays use it for the
object's silhouette and shading, the ground's rays towards the light for its shadow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6  # below this a ray distance or a direction component counts as zero


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
        t = np.where((disc >= 0) & (t > EPS), t, np.inf)
        n = (o + t[:, None] * d - np.array([0, 0, r], np.float32)) / r
    elif shape.kind == "cylinder":
        r, _, hgt = shape.dims
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
        disc = b * b - a * c
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, EPS)
        zs = o[:, 2] + ts * d[:, 2]
        ts = np.where((disc >= 0) & (ts > EPS) & (zs >= 0) & (zs <= hgt), ts, np.inf)
        safe_dz = np.where(np.abs(d[:, 2]) < EPS, -EPS, d[:, 2])
        tt = (hgt - o[:, 2]) / safe_dz
        px, py = o[:, 0] + tt * d[:, 0], o[:, 1] + tt * d[:, 1]
        tt = np.where((tt > EPS) & (px * px + py * py <= r * r), tt, np.inf)
        top = tt < ts
        t = np.minimum(ts, tt)
        hit = o + np.where(np.isfinite(t), t, 0)[:, None] * d
        n[:, 0] = np.where(top, 0, hit[:, 0] / r)
        n[:, 1] = np.where(top, 0, hit[:, 1] / r)
        n[:, 2] = np.where(top, 1, 0)
    else:
        half = np.array(shape.dims, np.float32)
        centre = np.array([0, 0, half[2]], np.float32)
        safe_d = np.where(np.abs(d) < EPS, EPS, d)
        t1 = (-half - (o - centre)) / safe_d
        t2 = (half - (o - centre)) / safe_d
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = np.argmax(near, axis=1)
        tmin, tmax = near.max(axis=1), far.min(axis=1)
        t = np.where((tmin <= tmax) & (tmin > EPS), tmin, np.inf)
        rows = np.arange(len(d))
        n[rows, axis] = -np.sign(d[rows, axis])
    return t, n


def footprint_distance(shape: Shape, g: np.ndarray) -> np.ndarray:
    """Ground distance from points ``g`` to where the object touches the ground."""
    if shape.kind == "sphere":
        return np.hypot(g[:, 0], g[:, 1])
    if shape.kind == "cylinder":
        return np.maximum(np.hypot(g[:, 0], g[:, 1]) - shape.dims[0], 0)
    dx = np.maximum(np.abs(g[:, 0]) - shape.dims[0], 0)
    dy = np.maximum(np.abs(g[:, 1]) - shape.dims[1], 0)
    return np.hypot(dx, dy)
