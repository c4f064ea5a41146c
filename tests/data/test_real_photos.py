"""The real photos shipped in real-photos/ (the demo models learn from train/
and are measured on held-out/): their layout, their split, their notice,
and that the serving image leaves them out."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bbc1k.folders import find_images
from bbc1k.layout import OBJECT_CLASSES

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / "real-photos"


def test_the_shipped_photos_are_class_folders_split_in_two_disjoint_stratified_parts() -> None:
    parts = {part: find_images(REAL / part) for part in ("train", "held-out")}
    for classes, paths, _ in parts.values():
        assert classes == sorted(OBJECT_CLASSES)
        assert all(p.suffix == ".jpg" for p in paths)
    names = {part: {p.name for p in paths} for part, (_, paths, _) in parts.items()}
    assert not names["train"] & names["held-out"]
    counts = {part: Counter(classes[i] for i in labels) for part, (classes, _, labels) in parts.items()}
    assert sum(counts["train"].values()) == 480 and sum(counts["held-out"].values()) == 120
    for c in OBJECT_CLASSES:  # each class keeps a fifth of its photos held out
        share = counts["held-out"][c] / (counts["held-out"][c] + counts["train"][c])
        assert abs(share - 0.2) < 0.01, (c, share)
    sizes = {Image.open(p).size for _, paths, _ in parts.values() for p in paths}
    assert sizes == {(256, 192)}
    megabytes = sum(p.stat().st_size for p in REAL.rglob("*.jpg")) / 2**20
    assert megabytes < 8, megabytes


def test_the_photos_carry_their_source_and_license() -> None:
    notice = (REAL / "README.md").read_text()
    assert "unccv/deep_learning" in notice and "Apache License 2.0" in notice
    assert "Apache License" in (REAL / "LICENSE").read_text() and "Version 2.0" in (REAL / "LICENSE").read_text()


def test_the_serving_image_leaves_the_photos_out() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "*" in lines  # everything is out unless let in...
    assert not [line for line in lines if line.startswith("!") and "real-photos" in line]  # ...and they are not


def _thumb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((64, 48)), np.float32)


def test_the_page_offers_real_examples_from_the_held_out_photos() -> None:
    page = (REPO / "app" / "static" / "index.html").read_text()
    for c in OBJECT_CLASSES:
        example = REPO / "app" / "static" / "examples" / f"real-{c}.jpg"
        assert f'data-src="/static/examples/real-{c}.jpg"' in page and example.is_file()
        # each is one of the held-out photos of its class, which no demo model trained on
        nearest = {part: min(np.abs(_thumb(example) - _thumb(p)).mean() for p in (REAL / part / c).glob("*.jpg"))
                   for part in ("held-out", "train")}
        assert nearest["held-out"] < 4 < nearest["train"], nearest
