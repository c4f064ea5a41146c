"""Every reader of a folder of pictures takes the suffixes of bbc1k.layout.IMAGE_SUFFIXES,
.webp and .bmp included: validate, the class-folder installer and the GAN lesson's loader."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from data_zipkit import zip_members
from PIL import Image

from bbc1k import layout
from bbc1k.sources import install
from bbc1k.validate import validate

CONVERTED = {0: "WEBP", 1: "BMP"}  # row index -> format: one picture of each less common kind


def _encode(path: Path, fmt: str) -> bytes:
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def mixed_dataset(synthetic_dataset: Path, tmp_path: Path) -> Path:
    """The synthetic set with one .webp and one .bmp picture in place of two .jpg ones."""
    ds = Path(shutil.copytree(synthetic_dataset, tmp_path / "bbc_train"))
    rows = layout.read_labels(ds)
    renamed = {}
    for i, fmt in CONVERTED.items():
        old = rows[i].filename
        new = f"{Path(old).stem}.{fmt.lower()}"
        layout.image_path(ds, new).write_bytes(_encode(layout.image_path(ds, old), fmt))
        layout.image_path(ds, old).unlink()
        rows[i] = layout.LabelRow(new, rows[i].label, rows[i].label_index)
        renamed[old] = new
    layout.write_labels(ds, rows)
    coco = json.loads((ds / layout.BBOXES_JSON).read_text())
    for im in coco["images"]:
        im["file_name"] = renamed.get(im["file_name"], im["file_name"])
    (ds / layout.BBOXES_JSON).write_text(json.dumps(coco))
    return ds


def test_validate_counts_webp_and_bmp_pictures(mixed_dataset: Path) -> None:
    report = validate(mixed_dataset)
    assert report.ok, report.format()
    assert report.n_images == report.n_masks == report.n_boxes == 24
    assert not report.notes  # nothing was set aside as a non-image entry


def test_class_folders_of_webp_pictures_install(http_server, synthetic_dataset: Path, tmp_path: Path) -> None:
    members = [(f"deep_learning-master/data/{r.label}/{r.label}_{i:04d}.webp",
                _encode(layout.image_path(synthetic_dataset, r.filename), "WEBP"))
               for i, r in enumerate(layout.read_labels(synthetic_dataset))]
    url = http_server.serve("/master.zip", zip_members(members))
    path = install("github", tmp_path, url=url, progress=False)
    report = validate(path)
    assert report.ok, report.format()
    assert report.n_images == 24 and report.class_counts == {"brick": 8, "ball": 8, "cylinder": 8}
    assert all(r.filename.endswith(".webp") for r in layout.read_labels(path))


def test_gan_loader_reads_webp_and_bmp_pictures(mixed_dataset: Path) -> None:
    pytest.importorskip("torch")
    from bbc1k.gan_data import load_bbc_images

    pictures = load_bbc_images(mixed_dataset, size=16, crop="object")
    assert tuple(pictures.shape) == (24, 3, 16, 16)
