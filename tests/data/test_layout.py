"""The dataset contract's helpers in bbc1k.layout: labels, boxes, provenance, suffixes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bbc1k import layout


def test_link_class_folders_links_every_image_under_its_label(synthetic_dataset: Path, tmp_path: Path) -> None:
    out = layout.link_class_folders(synthetic_dataset, tmp_path / "classes")
    rows = layout.read_labels(synthetic_dataset)
    linked = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.jpg"))
    assert linked == sorted(f"{r.label}/{r.filename}" for r in rows)
    first = rows[0]
    assert (out / first.label / first.filename).read_bytes() == layout.image_path(synthetic_dataset, first.filename).read_bytes()
    # a second call (e.g. a rerun of the demo training) keeps what is there
    assert layout.link_class_folders(synthetic_dataset, out) == out
    assert len(list(out.glob("*/*.jpg"))) == len(rows)


def test_label_index_is_the_mask_value() -> None:
    assert [layout.label_index(c) for c in layout.OBJECT_CLASSES] == [1, 2, 3]
    with pytest.raises(ValueError, match="expected one of brick, ball, cylinder"):
        layout.label_index("cube")


def test_tight_box_is_the_box_of_the_non_zero_pixels() -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[2:5, 3:7] = 2
    mask[1, 4] = 2
    assert layout.tight_box(mask) == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="empty mask"):
        layout.tight_box(np.zeros((4, 4), np.uint8))


def test_provenance_round_trip(tmp_path: Path) -> None:
    assert layout.read_provenance(tmp_path) is None
    path = layout.write_provenance(tmp_path, {"source": "synthetic", "seed": 3})
    assert path == tmp_path / layout.PROVENANCE_FILE
    made = layout.read_provenance(tmp_path)
    assert made["source"] == "synthetic" and made["seed"] == 3 and "installed" in made


def test_image_suffixes_are_lower_case_and_include_the_common_formats() -> None:
    assert layout.IMAGE_SUFFIXES == (".jpg", ".jpeg", ".png", ".bmp", ".webp")
    assert all(s == s.lower() and s.startswith(".") for s in layout.IMAGE_SUFFIXES)
