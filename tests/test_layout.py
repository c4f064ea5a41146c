"""The dataset contract's helpers in bbc1k.layout."""
from __future__ import annotations

from pathlib import Path

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
