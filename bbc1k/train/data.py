"""The recipes' data: decoded ONCE, at low resolution, into uint8 tensors held
in memory (600 photos at 120x160 are 35 MB), so an epoch never touches the disk.

Photos are decoded by the app's own :func:`bbc1k.serving.decode.decode_image`
(EXIF rotation, any image mode) and resized the way its "squish" fit does, so
training, validation and the served model see images prepared alike.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bbc1k.layout import IMAGE_SUFFIXES, LabelRow, image_path, mask_path, read_labels
from bbc1k.serving.decode import ImageError, decode_image


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


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """One photo as uint8 HxWx3 RGB, squished to ``size`` = (H, W)."""
    try:
        decoded = decode_image(Path(path).read_bytes())
    except ImageError as e:
        raise DatasetError(f"{path}: {e}") from None
    return np.asarray(decoded.image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def load_images(paths: list[Path], size: tuple[int, int], workers: int = 2) -> torch.Tensor:
    """All photos as one uint8 tensor N x 3 x H x W (decoded once, kept in
    memory); N may be 0 (no validation split)."""
    if not paths:
        return torch.zeros((0, 3, *size), dtype=torch.uint8)
    with ThreadPoolExecutor(workers) as pool:  # Pillow decodes without the GIL
        arrays = list(pool.map(lambda p: load_image(p, size), paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def stratified_split(labels: np.ndarray, valid_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: ``(train indices, valid indices)``; each class
    keeps ``valid_frac`` of its images (at least one if it has two or more);
    ``valid_frac`` 0: everything trains."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_valid = 0 if valid_frac <= 0 or len(idx) < 2 else max(1, round(valid_frac * len(idx)))
        valid += idx[:n_valid].tolist()
        train += idx[n_valid:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(valid, dtype=np.int64))


def render_synthetic(classes: list[str], n: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic pictures (bbc1k.synth) of the given classes at ``size``
    (H, W): a uint8 tensor N x 3 x H x W and label indices into ``classes``."""
    from bbc1k.synth import render_sample  # the generator is only needed for synthetic pretraining

    h, w = size
    render_at = (max(w, 32), max(h, 32))  # the renderer draws nothing smaller than 32 pixels
    images, labels = [], []
    for i in range(n):
        image, _, label = render_sample(seed, i, size=render_at, classes=classes)
        images.append(np.asarray(image.resize((w, h), Image.BILINEAR)))
        labels.append(classes.index(label))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


def load_segmentation_set(dataset: str | Path, store: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(images uint8 N x 3 x H x W, masks uint8 N x H x W, class labels)``
    of a bbc1k dataset, squished to ``store`` (H, W)."""
    rows = read_labels(dataset)
    if not rows:
        raise DatasetError(f"{dataset}: no labelled images")
    h, w = store

    def mask(row: LabelRow) -> np.ndarray:
        path = mask_path(dataset, row.filename)
        if not path.is_file():
            raise DatasetError(f"{path}: missing (every image needs its mask)")
        return np.asarray(Image.open(path).resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8)

    with ThreadPoolExecutor(2) as pool:
        images = list(pool.map(lambda r: load_image(image_path(dataset, r.filename), store), rows))
        masks = list(pool.map(mask, rows))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks)), np.array([r.label_index for r in rows])
