"""bbc1k.synth.shapes and .raycast: ray hits, normals and the object's coverage."""
from __future__ import annotations

import numpy as np
import pytest

from bbc1k.synth.materials import TEX, Material
from bbc1k.synth.raycast import Camera, Light, render_object
from bbc1k.synth.scene import AMBIENT, DIFFUSE
from bbc1k.synth.shapes import Shape, footprint_distance, intersect

DOWN = np.array([[0.0, 0.0, -1.0]], np.float32)


@pytest.mark.parametrize("shape, top", [
    (Shape("sphere", (1.0, 1.0, 1.0)), 2.0),  # radius 1, resting on the ground: top at z = 2
    (Shape("cylinder", (0.5, 0.5, 1.5)), 1.5),  # radius 0.5, height 1.5
    (Shape("box", (1.0, 0.5, 0.25)), 0.5),  # half extents: top at z = 2 * 0.25
])
def test_a_ray_from_above_hits_the_top_with_an_upward_normal(shape: Shape, top: float) -> None:
    t, n = intersect(shape, np.array([0.0, 0.0, 5.0], np.float32), DOWN)
    assert t[0] == pytest.approx(5.0 - top, abs=1e-5)
    assert n[0] == pytest.approx([0.0, 0.0, 1.0], abs=1e-5)
    assert shape.height == pytest.approx(top)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # normals of missed rays are unused
def test_a_ray_beside_the_object_misses() -> None:
    t, _ = intersect(Shape("sphere", (1.0, 1.0, 1.0)), np.array([3.0, 0.0, 5.0], np.float32), DOWN)
    assert np.isinf(t[0])


def test_footprint_distance_is_zero_under_the_object() -> None:
    ground = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    d = footprint_distance(Shape("cylinder", (1.0, 1.0, 2.0)), ground)
    assert d.tolist() == pytest.approx([0.0, 2.0])


def test_coverage_of_a_ball_seen_from_above_is_its_disc() -> None:
    """The silhouette of a unit ball seen straight down is a disc: its coverage sums to pi r^2 pixels."""
    size, focal, distance = 64, 100.0, 20.0
    cam = Camera.orbit(np.array([0.0, 0.0, 1.0]), distance, np.pi / 2 - 1e-6, 0.0, 0.0, focal, (size / 2, size / 2))
    flat = Material(np.full((TEX, TEX, 3), 0.5, np.float32), texel=0.1, gloss=0.0, shininess=1.0)
    light = Light(np.array([0.0, 0.0, 1.0]), ambient=0.5, diffuse=0.5)
    out = render_object(Shape("sphere", (1.0, 1.0, 1.0)), cam, light, flat, (size, size))
    # The limb of a sphere seen from distance D lies at angle asin(r / D) from the centre.
    radius_px = focal * np.tan(np.arcsin(1.0 / distance))
    assert out.coverage.sum() == pytest.approx(np.pi * radius_px ** 2, rel=0.03)
    assert set(np.unique(out.coverage)) <= {0.0, 0.25, 0.5, 0.75, 1.0}  # 2 x 2 sub-pixels per edge pixel


def _ball_middle_contrast(light: Light, elevation: float) -> float:
    """Darkest over brightest (5th and 95th percentiles) across the middle of a grey ball:
    the pixels within three quarters of its radius."""
    size = 96
    cam = Camera.orbit(np.array([0.0, 0.0, 1.0]), 12.0, elevation, 0.0, 0.0, 150.0, (size / 2, size / 2))
    flat = Material(np.full((TEX, TEX, 3), 0.6, np.float32), texel=0.1, gloss=0.0, shininess=1.0)
    out = render_object(Shape("sphere", (1.0, 1.0, 1.0)), cam, light, flat, (size, size))
    inside = out.coverage >= 1
    ys, xs = np.nonzero(inside)
    yy, xx = np.mgrid[: inside.shape[0], : inside.shape[1]]
    middle = inside & ((xx - xs.mean()) ** 2 + (yy - ys.mean()) ** 2 < 0.75 ** 2 * inside.sum() / np.pi)
    lum = out.colour[..., 0][middle]
    return float(np.percentile(lum, 5) / np.percentile(lum, 95))


def test_a_ball_is_shaded_as_softly_as_the_photos_balls() -> None:
    # In close-ups of the photos' balls that ratio is 0.67 to 0.86. Under the scene's dimmest
    # room light with its strongest lamp, from every side and height, it stays above 0.58
    # (it went down to 0.41 with the stronger lamp and darker underside of before).
    ratios = []
    for light_elevation in np.deg2rad([35, 85]):
        for azimuth in (0.0, np.pi):  # the lamp behind the camera, then in front of it
            direction = np.array([np.cos(light_elevation) * np.sin(azimuth),
                                  np.cos(light_elevation) * np.cos(azimuth), np.sin(light_elevation)])
            light = Light(direction, ambient=AMBIENT[0], diffuse=DIFFUSE[1])
            ratios += [_ball_middle_contrast(light, e) for e in np.deg2rad([25, 88])]
    assert min(ratios) > 0.58, ratios
