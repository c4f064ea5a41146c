"""What the phone adds: the metered exposure."""
from __future__ import annotations

import numpy as np
import pytest

from bbc1k.synth import photo


def _developed_means(level: float, seeds: range) -> np.ndarray:
    scene = np.full((48, 64, 3), level, np.float32)
    return np.array([photo.develop(np.random.default_rng(s), scene.copy()).mean() for s in seeds])


def test_the_phone_meters_dark_and_bright_scenes_towards_mid_grey(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = range(20)
    metered = {level: _developed_means(level, seeds) for level in (0.15, 0.85)}
    monkeypatch.setattr(photo, "METER_STRENGTH", (0.0, 0.0))  # the same draws, no metering
    plain = {level: _developed_means(level, seeds) for level in (0.15, 0.85)}
    assert (metered[0.15] > plain[0.15] + 0.05).all()  # a dark room comes out brighter...
    # ...a bright one mostly dimmer (not always: the light field may have darkened it first)
    assert np.median(metered[0.85]) < np.median(plain[0.85]) - 0.05
    # and the gap between them closes by a third or more
    assert np.median(metered[0.85] - metered[0.15]) < 0.7 * np.median(plain[0.85] - plain[0.15])
