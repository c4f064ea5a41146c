"""One synthetic photo: a surface, clutter, the object with its shadow, occluders, the camera;
now and then the object held up in a hand against a window or a wall instead. The room
behind the object is muted, as the photos' are; the object keeps its colours.

``render_scene`` returns the picture and the exact mask of the object's
visible pixels: those where the ray-cast object covers at least half of the
pixel and no occluder (or finger) was drawn over it.
"""
from __future__ import annotations

import numpy as np

from bbc1k.synth.backgrounds import backdrop, room, surface
from bbc1k.synth.clutter import Layer, clutter, hand, occluders
from bbc1k.synth.materials import Material, brick_material, paper_material
from bbc1k.synth.noise import blur_map, blur_rgb
from bbc1k.synth.photo import develop, sensor
from bbc1k.synth.raycast import Camera, Light, render_object, render_shadow, screen_box
from bbc1k.synth.shapes import Shape

# Apparent size (fraction of the picture width) of the object's main dimension, read
# off the photos: smaller balls (often a tenth of the width or less), mid cylinders,
# larger bricks, with overlap.
SIZE_RANGE = {"ball": (0.07, 0.25), "cylinder": (0.1, 0.33), "brick": (0.15, 0.5)}
MIN_VISIBLE = 0.55  # an occluder may hide at most this much less than all of the object
# The room's light (ranges of ``Light.ambient`` and ``Light.diffuse``): mostly diffuse, as
# in the photos. Across the middle of a ball (three quarters of its radius) the darkest
# pixels are 0.67 to 0.86 of the brightest in close-ups of the photos' balls, and 0.71 in
# the pictures' median. They were 0.59 with a stronger lamp (diffuse 0.25 to 0.5) and a
# darker underside, and the photos' balls were called "brick" or "cylinder" nearly twice
# as often (61 times against 34, seed 0 of bench.synth_realism).
AMBIENT = (0.6, 0.85)
DIFFUSE = (0.1, 0.35)
# How much of its colour the room behind the object keeps (a range of factors on each
# pixel's distance from its grey). The photos' rooms are muted: 6% of their pixels are
# strongly coloured (HSV saturation over 0.5), against 20% in the pictures while the
# clutter's colours and the surfaces were drawn at full strength; with these, 7.5%.
BACKGROUND_SATURATION = (0.35, 0.7)


def make_shape(rng: np.random.Generator, label: str) -> tuple[Shape, float]:
    """The object's shape and the world size its apparent size refers to."""
    if label == "ball":
        return Shape("sphere", (1.0, 1.0, 1.0)), 2.0
    if label == "cylinder":
        height = 2 * rng.uniform(0.45, 0.75)  # a round card box: wider than it is tall
        return Shape("cylinder", (1.0, 1.0, height)), 2.0
    length, width, thick = 1.0, rng.uniform(0.42, 0.55), rng.uniform(0.25, 0.35)
    pose = rng.choice(3, p=[0.7, 0.25, 0.05])
    dims = [(length, width, thick), (length, thick, width), (thick, width, length)][pose]
    return Shape("box", dims), 2.0


def make_material(rng: np.random.Generator, shape: Shape, label: str) -> Material:
    extent = 2 * max(shape.dims)
    if label == "brick":
        return brick_material(rng, extent)
    return paper_material(rng, extent, seam_height=shape.height if label == "cylinder" else None)


def place_camera(rng: np.random.Generator, shape: Shape, label: str, size: tuple[int, int],
                 elevation: float, world: float) -> Camera:
    """Aim a phone-like camera so the object has a plausible size and lies (mostly) in the picture."""
    w, h = size
    lo, hi = SIZE_RANGE[label]
    frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    focal = w * rng.uniform(0.75, 1.05)
    azimuth = rng.uniform(0, 2 * np.pi)
    roll = rng.normal(0, 0.08)
    target = np.array([0.0, 0.0, shape.height / 2])
    for _ in range(6):
        distance = focal * world / (frac * w)
        centre = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)
        cam = Camera.orbit(target, distance, elevation, azimuth, roll, focal, centre)
        x0, y0, x1, y1 = screen_box(shape, cam)
        if x1 - x0 < 0.9 * w and y1 - y0 < 0.9 * h:
            break
        frac *= 0.75
    # Keep the object inside the picture, except for a rare crop at the border.
    slack = 0.15 * (x1 - x0) if rng.random() < 0.1 else -2.0
    dx = max(0.0, -slack - x0) - max(0.0, x1 - w - slack)
    dy = max(0.0, -slack - y0) - max(0.0, y1 - h - slack)
    return Camera.orbit(target, distance, elevation, azimuth, roll, focal, (centre[0] + dx, centre[1] + dy))


def _cast_shadows(rng: np.random.Generator, img: np.ndarray, layer: Layer, offset: np.ndarray, strength: float) -> np.ndarray:
    """Darken under and beside the clutter, as the room light would."""
    cov = np.asarray(layer.alpha, np.float32) / 255
    if not cov.any():
        return img
    shifted = np.roll(cov, (int(offset[1]), int(offset[0])), axis=(0, 1))
    soft = blur_map(shifted, rng.uniform(3, 10))
    return img * (1 - strength * soft)[..., None]


def _mute(img: np.ndarray, saturation: float) -> np.ndarray:
    """``img`` with ``saturation`` of each pixel's colour left around its grey (the channels' mean)."""
    grey = img.mean(axis=2, keepdims=True)
    return grey + (img - grey) * np.float32(saturation)


def _over(img: np.ndarray, layer: Layer) -> np.ndarray:
    cov = np.asarray(layer.alpha) >= 128
    colour = np.asarray(layer.colour, np.float32) / 255
    return np.where(cov[..., None], colour, img)


def _left_visible(visible: np.ndarray, layer: Layer) -> np.ndarray | None:
    """The object's pixels still visible with ``layer`` in front of it, or None when less
    than ``MIN_VISIBLE`` of them would be (the layer is then left out)."""
    left = visible & ~(np.asarray(layer.alpha) >= 128)
    return left if left.sum() >= MIN_VISIBLE * visible.sum() else None


def render_scene(rng: np.random.Generator, label: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 RGB HxWx3, bool HxW visible-object mask)`` of one photo-like scene."""
    w, h = size
    # Held up in a hand against a window or a wall, as some photos are. Drawn from its own
    # stream, so that the pictures on a table are the same with it or without it.
    held_rng = rng.spawn(1)[0]
    held = held_rng.random() < 0.1
    muted_rng = rng.spawn(1)[0]  # likewise: the shapes and places below stay the same
    elevation = float(np.deg2rad(rng.uniform(25, 88)))  # down to the table, at times from straight above
    squeeze = 1 + 1.8 * np.cos(elevation) ** 2 * rng.uniform(0.6, 1.1)
    img = surface(rng, w, h, squeeze)
    if rng.random() < 0.3:
        img = backdrop(rng, img)
    if held:  # the table above is drawn all the same, so that the stream below is too
        img = room(held_rng, w, h)
        elevation = float(np.deg2rad(held_rng.uniform(0, 35)))

    light_el = rng.uniform(np.deg2rad(35), np.deg2rad(85))
    light_az = rng.uniform(0, 2 * np.pi)
    light_dir = np.array([np.cos(light_el) * np.sin(light_az), np.cos(light_el) * np.cos(light_az), np.sin(light_el)])
    light = Light(light_dir, ambient=rng.uniform(*AMBIENT), diffuse=rng.uniform(*DIFFUSE))

    shape, world = make_shape(rng, label)
    cam = place_camera(rng, shape, label, size, elevation, world)
    material = make_material(rng, shape, label)

    # The clutter's shadows fall the way the object's do.
    ground = np.array([0.0, 0.0, 0.0])
    tip = ground - light_dir / max(light_dir[2], 0.2) * 0.3
    offset = cam.project(tip[None])[0] - cam.project(ground[None])[0]
    offset = offset / (np.linalg.norm(offset) + 1e-6) * rng.uniform(2, 10) * w / 512
    busy = float(rng.choice([0.0, rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.2)], p=[0.15, 0.4, 0.45]))
    if busy > 0 and not held:
        layer = clutter(rng, w, h, busy)
        img = _cast_shadows(rng, img, layer, offset, rng.uniform(0.15, 0.4))
        img = _over(img, layer)
    if rng.random() < 0.15:  # shallow depth of field: the background is softer than the object
        img = blur_rgb(img, float(rng.uniform(0.8, 2.5)) * w / 512)  # blur radii are for 512-wide pictures

    img = _mute(img, muted_rng.uniform(*BACKGROUND_SATURATION))
    dark, (sx0, sy0, sx1, sy1) = render_shadow(shape, cam, light, size, softness=rng.uniform(0.04, 0.25))
    if held:
        palm, fingers = hand(held_rng, w, h, screen_box(shape, cam))
        img = _over(img, palm)
    elif dark.size:
        img[sy0:sy1, sx0:sx1] *= (1 - rng.uniform(0.3, 0.7) * dark)[..., None]

    obj = render_object(shape, cam, light, material, size)
    visible = np.zeros((h, w), bool)
    if obj.coverage.size:
        x0, y0, x1, y1 = obj.window
        cov = obj.coverage[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - cov) + obj.colour * cov
        visible[y0:y1, x0:x1] = obj.coverage >= 0.5
    if not visible.any():  # cannot happen with the placement above; keep the contract anyway
        raise RuntimeError("the object fell outside the picture")

    if held:
        left = _left_visible(visible, fingers)
        if left is not None:
            img, visible = _over(img, fingers), left
    elif rng.random() < 0.22:
        occ = occluders(rng, w, h, screen_box(shape, cam))
        left = _left_visible(visible, occ)
        if left is not None:
            img = _cast_shadows(rng, img, occ, offset, rng.uniform(0.2, 0.4))
            img, visible = _over(img, occ), left

    return sensor(rng, develop(rng, img)), visible
