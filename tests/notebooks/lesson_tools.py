"""Helpers of the lesson tests: a lesson's cells, test code put after chosen
cells (as testbook's ``inject`` does), and an easy dataset that any working
training loop learns."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def lesson_cells(path: str | os.PathLike) -> list[str]:
    """The source of every code cell of a lesson, in order."""
    import nbformat

    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def cell_with(cells: list[str], text: str) -> str:
    """The one cell whose source contains ``text``: a clear failure when the lesson changed."""
    found = [c for c in cells if text in c]
    if len(found) != 1:
        pytest.fail(f"{len(found)} cells contain {text!r}; the test expects exactly one")
    return found[0]


def with_probes(path: Path, probes: dict[str, str], out: Path) -> Path:
    """A copy of the notebook with ``probes[text]`` run after the one cell containing ``text``."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for text, code in probes.items():
        target = cell_with([c.source for c in nb.cells if c.cell_type == "code"], text)
        i = next(k for k, c in enumerate(nb.cells) if c.cell_type == "code" and c.source == target)
        nb.cells.insert(i + 1, nbformat.v4.new_code_cell(code))
    copy = out / f"probed-{path.name}"
    nbformat.write(nb, copy)
    return copy


EASY_COLOURS = {"brick": (210, 40, 40), "ball": (40, 180, 40), "cylinder": (40, 70, 210)}
"""Each class of the easy set has its own colour: a network that learns anything separates them."""


def easy_picture(label: str, rng, size: tuple[int, int] = (96, 72)):
    """A noisy grey picture with one filled shape in the colour of ``label``, somewhere in it."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = size
    pixels = rng.normal(128, 20, (h, w, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    side = int(rng.integers(h // 2, h - 4))
    x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    ImageDraw.Draw(img).rectangle([x0, y0, x0 + side, y0 + side], fill=EASY_COLOURS[label])
    return img


def make_easy_dataset(root: Path, n: int, seed: int) -> Path:
    """A labels-only ``root/bbc_train`` of ``n`` easy pictures (classes in turn), as if put there by hand."""
    import numpy as np

    from bbc1k import layout

    ds = root / layout.DATASET_DIRNAME
    (ds / layout.IMAGES_DIR).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = layout.OBJECT_CLASSES[i % len(layout.OBJECT_CLASSES)]
        name = f"easy_{i:03d}.png"
        easy_picture(label, rng).save(ds / layout.IMAGES_DIR / name)
        rows.append(layout.LabelRow(name, label, layout.label_index(label)))
    layout.write_labels(ds, rows)
    return ds
