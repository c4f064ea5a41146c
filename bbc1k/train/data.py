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

from bbc1k.folders import DatasetError, find_images  # noqa: F401  (the recipes' names for them)
from bbc1k.layout import LabelRow, image_path, mask_path, read_labels
from bbc1k.serving.decode import ImageError, decode_image


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


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """``n_folds`` seeded, disjoint, stratified folds covering every item:
    the validation indices of each fold of a cross-validation."""
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for k, part in enumerate(np.array_split(idx, n_folds)):
            folds[(k + int(c)) % n_folds] += part.tolist()  # rotate, so the larger parts spread over the folds
    return [np.sort(np.array(f, dtype=np.int64)) for f in folds]


def split_indices(labels: np.ndarray, valid_frac: float, seed: int, fold: int | None = None,
                  n_folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, valid indices)``: fold ``fold`` of :func:`stratified_folds`
    held out when ``fold`` is given, else :func:`stratified_split`."""
    if fold is None:
        return stratified_split(labels, valid_frac, seed)
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    valid = stratified_folds(labels, n_folds, seed)[fold]
    return np.setdiff1d(np.arange(len(labels)), valid), valid


def _render_one(job: tuple[tuple[str, ...], int, int, tuple[int, int]]) -> tuple[np.ndarray, str]:
    """One synthetic picture at (H, W) and its label (a pool's task: module level, picklable)."""
    from bbc1k.synth import render_sample  # the generator is only needed for synthetic pictures

    classes, seed, index, (h, w) = job
    render_at = (max(w, 32), max(h, 32))  # the renderer draws nothing smaller than 32 pixels
    image, _, label = render_sample(seed, index, size=render_at, classes=classes)
    return np.asarray(image.resize((w, h), Image.BILINEAR)), label


def render_synthetic(classes: list[str], n: int, size: tuple[int, int], seed: int,
                     workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic pictures (bbc1k.synth) of the given classes at ``size``
    (H, W): a uint8 tensor N x 3 x H x W and label indices into ``classes``.
    ``workers`` processes render them (default: one per CPU core, at most
    two per hundred pictures); the pictures do not depend on it."""
    import os

    jobs = [(tuple(classes), seed, i, tuple(size)) for i in range(n)]
    workers = workers or max(1, min(os.cpu_count() or 1, n // 50))
    if workers == 1:
        rendered = [_render_one(job) for job in jobs]
    else:
        import multiprocessing

        # spawn, not fork: forking a process that runs torch's thread pools can deadlock the children
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rendered = pool.map(_render_one, jobs, chunksize=max(1, n // (workers * 4)))
    x = torch.from_numpy(np.stack([image for image, _ in rendered])).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([classes.index(label) for _, label in rendered])


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
