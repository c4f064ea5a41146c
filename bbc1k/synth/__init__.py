"""Synthetic bbc1k: photo-like pictures of one brick, ball or cylinder, with exact masks.

This is the embedded default dataset of the workshop: it needs no download,
only numpy and Pillow, and writes the same layout as the real ``bbc_train``
(see :mod:`bbc1k.layout`)::

    from bbc1k.synth import generate
    generate("bbc_train", n=1000, seed=0)

Every sample is a pure function of ``(seed, index)``: the same seed gives
byte-identical files whatever the number of worker processes.

Modules, from the dataset down (imports point down only):

* ``dataset``: ``generate``, ``render_sample``, ``sample_label``: samples and files;
* ``scene``: one picture: surface, clutter (muted), the object and its shadow, occluders (or a hand);
* ``raycast``: the pinhole camera, the light, and ray casting of the object and its shadow;
* ``shapes``: the object's geometry (box, sphere, cylinder) and ray intersection;
* ``materials``: the object's procedural surface textures;
* ``backgrounds``: tabletops and floors, walls behind them, rooms behind a held object;
* ``clutter``: desk items around the object, things that hide part of it, a hand;
* ``photo``: what the phone adds: light falloff, white balance, metered exposure, blur, sensor noise;
* ``noise``: cheap procedural noise and blur maps shared by the above.
"""
from __future__ import annotations

from bbc1k.layout import tight_box
from bbc1k.synth.dataset import DEFAULT_SIZE, file_name, generate, render_sample, sample_label

__all__ = ["generate", "render_sample", "sample_label", "file_name", "tight_box", "DEFAULT_SIZE"]
