"""Folders of photos with one subfolder per class (``brick/``, ``ball/``, ...):
what the classifier recipe reads and real photos with class labels only
come as. Torch-free, so the serving helpers can score models on them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bbc1k.layout import IMAGE_SUFFIXES


class DatasetError(ValueError):
    """The data folder is not what the recipe reads (class subfolders of
    images, or a bbc1k dataset), or one of its files is broken."""


def find_images(data_dir: str | Path) -> tuple[list[str], list[Path], np.ndarray]:
    """``(classes, image paths, label indices)`` of a folder of class subfolders."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    classes, paths, labels = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            paths += images
            labels += [len(classes)] * len(images)
            classes.append(sub.name)
    if len(classes) < 2:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        raise DatasetError(
            f"{root}: expected one subfolder of images per class (at least two classes), "
            f"found {len(classes)} class folder(s){f' and {loose} loose image(s)' if loose else ''}. "
            f"Lay it out as {root}/<class name>/<image>.jpg")
    return classes, paths, np.array(labels, dtype=np.int64)


def check_classes(folder: str | Path, classes: list[str], known: list[str], known_as: str) -> None:
    """Refuse class folders of ``folder`` that are not among ``known``
    (named ``known_as`` in the message: "the model's", "the mask classes"),
    before any work is spent on them."""
    unknown = sorted(set(classes) - set(known))
    if unknown:
        raise DatasetError(f"{folder}: class folder(s) {unknown} are not among {known_as} {list(known)}")
