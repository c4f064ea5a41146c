"""bbc1k.synth.clutter: the things around the object are drawn with texture, not flat colour; a hand
holds the object from below."""
from __future__ import annotations

import numpy as np

from bbc1k.synth.clutter import Layer, clutter, hand


def test_multiply_scales_the_colours_and_keeps_the_coverage() -> None:
    layer = Layer(8, 6)
    layer.polygon([(0, 0), (7, 0), (7, 5), (0, 5)], (100, 50, 200))
    factor = np.full((6, 8), 1.5, np.float32)
    factor[:, :4] = 0.5
    layer.multiply(factor)
    colour = np.asarray(layer.colour)
    assert (colour[:, :4] == (50, 25, 100)).all()
    assert (colour[:, 4:] == (150, 75, 255)).all()  # clipped to 8 bits
    assert (np.asarray(layer.alpha) == 255).all()
    layer.line([(0, 3), (7, 3)], (1, 2, 3), 1)  # drawing goes on in the new colours
    assert (np.asarray(layer.colour)[3] == (1, 2, 3)).all()


def test_clutter_items_have_grain() -> None:
    # Share of neighbouring covered pixels that differ: about 0.39 (median of these 12
    # layers) while items were flat colour but for the pictures on magazines; 0.71 with grain.
    shares = []
    for seed in range(12):
        layer = clutter(np.random.default_rng(seed), 256, 192, busy=1.0)
        colour = np.asarray(layer.colour, np.int16)
        covered = np.asarray(layer.alpha) >= 128
        both = covered[:, 1:] & covered[:, :-1]
        differ = np.abs(colour[:, 1:] - colour[:, :-1]).sum(axis=-1) > 0
        shares.append(differ[both].mean())
    assert np.median(shares) > 0.55, shares


def test_a_hand_holds_the_object_from_below() -> None:
    x0, y0, x1, y1 = 100, 60, 160, 120  # the object's box on the screen
    for seed in range(8):
        palm, fingers = hand(np.random.default_rng(seed), 256, 192, (x0, y0, x1, y1))
        over = np.asarray(fingers.alpha)[y0:y1, x0:x1] >= 128
        assert over[45:].any(), seed  # the fingers curl over its lower edge...
        assert not over[:15, 20:40].any(), seed  # ...and leave the middle of its top alone
        rows, _ = np.nonzero(np.asarray(palm.alpha) >= 128)
        assert np.median(rows) > (y0 + y1) / 2, seed  # the palm and the arm are below it
