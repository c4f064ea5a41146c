"""The dataset contract shared by the data tools, the notebooks and the app.

A dataset folder (conventionally named ``bbc_train``) holds::

    images/<stem>.jpg              RGB photos
    masks/<stem>.png               one uint8 per pixel: 0 background, 1 brick, 2 ball, 3 cylinder
    bboxes.json                    COCO: images, annotations (bbox = [x, y, w, h] in pixels), categories
    classification_labels.csv      filename,label,label_index
    .bbc1k-source.json             where an installed dataset came from (optional)

``label_index`` is the mask value of the object's class (brick 1, ball 2,
cylinder 3), as in the original bbc_train.zip.

The data tools (``sources``, ``validate``, ``gan_data``) and the generator
(``bbc1k.synth``) all depend on this module and it on none of them: facts they
share (image suffixes, a mask's box, the provenance file) live here.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

MASK_CLASSES: tuple[str, ...] = ("background", "brick", "ball", "cylinder")
"""Class names in mask-value order: mask pixel ``v`` belongs to ``MASK_CLASSES[v]``."""

OBJECT_CLASSES: tuple[str, ...] = MASK_CLASSES[1:]
"""The object classes, in mask-value order (brick, ball, cylinder)."""

CLASSES = OBJECT_CLASSES
"""Alias of OBJECT_CLASSES: the labels a classifier predicts."""

DATASET_DIRNAME = "bbc_train"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
BBOXES_JSON = "bboxes.json"
LABELS_CSV = "classification_labels.csv"
LABELS_HEADER = ("filename", "label", "label_index")
PROVENANCE_FILE = ".bbc1k-source.json"
"""Written inside an installed dataset: which source, URL or generator settings made it."""

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File suffixes (lower-case) taken for pictures wherever a folder of images is read."""


def label_index(label: str) -> int:
    """The mask value (and ``label_index``) of an object class name."""
    try:
        return MASK_CLASSES.index(label)
    except ValueError:
        raise ValueError(f"unknown class {label!r}; expected one of {', '.join(OBJECT_CLASSES)}") from None


@dataclass(frozen=True)
class LabelRow:
    filename: str
    label: str
    label_index: int


def read_labels(dataset: Path | str) -> list[LabelRow]:
    """Rows of ``classification_labels.csv`` in file order."""
    path = Path(dataset) / LABELS_CSV
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(LABELS_HEADER) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return [LabelRow(r["filename"], r["label"], int(r["label_index"])) for r in reader]


def write_labels(dataset: Path | str, rows: list[LabelRow]) -> Path:
    path = Path(dataset) / LABELS_CSV
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LABELS_HEADER)
        for r in rows:
            writer.writerow((r.filename, r.label, r.label_index))
    return path


def read_boxes(dataset: Path | str) -> dict[str, tuple[str, list[float]]]:
    """``{image file name: (class name, [x, y, w, h])}`` from ``bboxes.json``.

    The original file lists more image entries than the folder holds and may
    list several annotations per image; the first annotation of each image wins.
    """
    coco = json.loads((Path(dataset) / BBOXES_JSON).read_text())
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    files = {im["id"]: im["file_name"] for im in coco.get("images", [])}
    boxes: dict[str, tuple[str, list[float]]] = {}
    for ann in coco.get("annotations", []):
        fname = files.get(ann["image_id"])
        if fname is not None and fname not in boxes:
            boxes[fname] = (names.get(ann["category_id"], str(ann["category_id"])), list(ann["bbox"]))
    return boxes


def coco_categories() -> list[dict]:
    """COCO categories with ids equal to the mask values."""
    return [{"id": i, "name": n, "supercategory": "object"} for i, n in enumerate(MASK_CLASSES) if i > 0]


def image_path(dataset: Path | str, filename: str) -> Path:
    return Path(dataset) / IMAGES_DIR / filename


def mask_path(dataset: Path | str, filename: str) -> Path:
    """The mask of an image: same stem, ``.png``, in ``masks/``."""
    return Path(dataset) / MASKS_DIR / (Path(filename).stem + ".png")


def link_class_folders(dataset: Path | str, out: Path | str) -> Path:
    """Link the images of a dataset into ``out/<label>/`` (one folder per class,
    the layout image-folder tools expect) without copying them; returns ``out``."""
    out = Path(out)
    for row in read_labels(dataset):
        (out / row.label).mkdir(parents=True, exist_ok=True)
        link = out / row.label / row.filename
        if not link.exists():
            link.symlink_to(image_path(dataset, row.filename).resolve())
    return out


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """COCO ``[x, y, w, h]`` of the non-zero pixels of ``mask``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no box")
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def read_provenance(dataset: Path | str) -> dict | None:
    """The contents of the dataset's provenance file, or None when it has none."""
    path = Path(dataset) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_provenance(dataset: Path | str, info: dict) -> Path:
    """Record ``info`` (plus the install time, UTC) as the dataset's provenance; returns the file."""
    info = {**info, "installed": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = Path(dataset) / PROVENANCE_FILE
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path
