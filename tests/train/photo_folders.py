"""Tiny class folders of synthetic pictures for the recipes' tests (the
``class_folders`` fixture of tests/train/conftest.py)."""
from __future__ import annotations

from pathlib import Path

PER_CLASS = 4
RENDER_SIZE = (64, 48)  # (width, height) of the synthetic pictures


def make_class_folders(root: Path, per_class: int = PER_CLASS) -> Path:
    """``root``/ball/, brick/, cylinder/ with ``per_class`` synthetic pictures each."""
    from bbc1k.synth import render_sample

    counts: dict[str, int] = {}
    index = 0
    while min(counts.values(), default=0) < per_class or len(counts) < 3:
        image, _, label = render_sample(seed=0, index=index, size=RENDER_SIZE)
        index += 1
        if counts.get(label, 0) >= per_class:
            continue
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / f"{label}_{counts.get(label, 0)}.jpg")
        counts[label] = counts.get(label, 0) + 1
    return root
