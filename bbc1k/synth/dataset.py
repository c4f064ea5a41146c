"""Samples and datasets: which class sample ``index`` shows, its picture and mask,
and writing ``n`` of them in the ``bbc_train`` layout (see :mod:`bbc1k.layout`).

Every sample is a pure function of ``(seed, index)``: the same seed gives
byte-identical files whatever the number of worker processes.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bbc1k import layout
from bbc1k.layout import tight_box
from bbc1k.synth.scene import render_scene

__all__ = ["generate", "render_sample", "sample_label", "file_name", "DEFAULT_SIZE"]

DEFAULT_SIZE: tuple[int, int] = (512, 384)
"""(width, height) of the real photos."""

MIN_SIDE = 32
FILE_PREFIX = "synth_"
JPEG_QUALITY_RANGE = (72, 95)  # phone photos are compressed with varied quality


def _check_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is None:
        return layout.OBJECT_CLASSES
    if isinstance(classes, str):
        raise ValueError(f"classes must be a sequence of class names, not the string {classes!r}")
    chosen = tuple(classes)
    if not chosen:
        raise ValueError("classes must name at least one class")
    for c in chosen:
        if c not in layout.OBJECT_CLASSES:
            raise ValueError(f"unknown class {c!r}; expected some of {', '.join(layout.OBJECT_CLASSES)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"classes must not repeat a name: {list(chosen)}")
    return chosen


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w < MIN_SIDE or h < MIN_SIDE or (w, h) != tuple(size):
        raise ValueError(f"size must be two whole numbers of at least {MIN_SIDE} pixels, got {size!r}")
    return w, h


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def sample_label(seed: int, index: int, classes: Sequence[str] | None = None) -> str:
    """The class of sample ``index``: each block of ``len(classes)`` consecutive
    indices holds every class once, in a seeded order, so counts stay balanced
    (they differ by at most one) for any ``n``."""
    chosen = _check_classes(classes)
    k = len(chosen)
    block, slot = divmod(int(index), k)
    order = np.random.default_rng([_check_seed(seed), block, 0x1AB]).permutation(k)
    return chosen[int(order[slot])]


def render_sample(
    seed: int,
    index: int,
    size: tuple[int, int] = DEFAULT_SIZE,
    classes: Sequence[str] | None = None,
) -> tuple[Image.Image, np.ndarray, str]:
    """Render sample ``index`` of dataset ``seed``: ``(RGB image, uint8 mask HxW, label)``.

    The mask holds 0 for background and the class's mask value (brick 1, ball 2,
    cylinder 3) on exactly the object's visible pixels. The image is not yet
    JPEG-compressed (``generate`` does that).
    """
    seed = _check_seed(seed)
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    label = sample_label(seed, index, classes)
    rng = np.random.default_rng([seed, int(index)])
    rgb, visible = render_scene(rng, label, _check_size(size))
    mask = visible.astype(np.uint8) * np.uint8(layout.label_index(label))
    return Image.fromarray(rgb, "RGB"), mask, label


@dataclass(frozen=True)
class _Job:
    out_dir: str
    seed: int
    index: int
    size: tuple[int, int]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class _Written:
    index: int
    filename: str
    label: str
    bbox: tuple[int, int, int, int]
    area: int


def file_name(index: int) -> str:
    """The image file name of sample ``index`` (its mask has the same stem)."""
    return f"{FILE_PREFIX}{index:06d}.jpg"


def _write_sample(job: _Job) -> _Written:
    image, mask, label = render_sample(job.seed, job.index, job.size, job.classes)
    name = file_name(job.index)
    # The JPEG quality is part of the sample, so it comes from the sample's own stream.
    quality = int(np.random.default_rng([job.seed, job.index, 0x1E6]).integers(*JPEG_QUALITY_RANGE))
    out = Path(job.out_dir)
    image.save(layout.image_path(out, name), quality=quality)
    Image.fromarray(mask, "L").save(layout.mask_path(out, name), optimize=False)
    return _Written(job.index, name, label, tight_box(mask), int(np.count_nonzero(mask)))


def _prepare_out_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` (or accept an empty one); True when it was created here."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            raise ValueError(f"{out_dir} is not empty; choose a new or empty folder so nothing is overwritten")
        created = False
    else:
        out_dir.mkdir(parents=True)
        created = True
    (out_dir / layout.IMAGES_DIR).mkdir()
    (out_dir / layout.MASKS_DIR).mkdir()
    return created


def _write_index(out_dir: Path, written: list[_Written], size: tuple[int, int]) -> None:
    layout.write_labels(
        out_dir,
        [layout.LabelRow(w.filename, w.label, layout.label_index(w.label)) for w in written],
    )
    width, height = size
    coco = {
        "info": {"description": "bbc1k synthetic dataset (bbc1k.synth)"},
        "images": [
            {"id": i + 1, "file_name": w.filename, "width": width, "height": height}
            for i, w in enumerate(written)
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": layout.label_index(w.label),
                "bbox": list(w.bbox),
                "area": w.area,
                "iscrowd": 0,
            }
            for i, w in enumerate(written)
        ],
        "categories": layout.coco_categories(),
    }
    (out_dir / layout.BBOXES_JSON).write_text(json.dumps(coco, indent=1))


def _run_jobs(jobs: list[_Job], workers: int, progress: bool) -> list[_Written]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="synthesising", unit="img", disable=not progress)
    try:
        if workers == 1:
            results = []
            for job in jobs:
                results.append(_write_sample(job))
                bar.update()
            return results
        import multiprocessing

        # spawn, not fork: forking a process that already runs torch's thread pools
        # (a notebook kernel) can deadlock the children.
        ctx = multiprocessing.get_context("spawn")
        chunk = max(1, min(16, len(jobs) // (workers * 8)))
        with ctx.Pool(workers) as pool:
            results = []
            for r in pool.imap_unordered(_write_sample, jobs, chunksize=chunk):
                results.append(r)
                bar.update()
        return sorted(results, key=lambda r: r.index)
    finally:
        bar.close()


def generate(
    out_dir: Path | str,
    n: int,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    workers: int | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic samples into ``out_dir`` in the bbc_train layout and return it.

    ``out_dir`` is created; an existing non-empty folder is refused. ``size`` is
    ``(width, height)``. ``classes`` restricts (and orders) the classes drawn;
    counts are balanced. ``workers=None`` uses every CPU core. The same arguments
    give byte-identical files, whatever ``workers`` is.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    seed = _check_seed(seed)
    size = _check_size(size)
    chosen = _check_classes(classes)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    workers = min(workers, int(n))
    out = Path(out_dir)
    created = _prepare_out_dir(out)
    try:
        jobs = [_Job(str(out), seed, i, size, chosen) for i in range(int(n))]
        written = _run_jobs(jobs, workers, progress)
        _write_index(out, written, size)
    except BaseException:
        # Leave no half-written dataset behind; the folder was new or empty.
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return out
