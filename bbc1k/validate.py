"""Check a dataset folder against the contract of :mod:`bbc1k.layout`.

``validate(path)`` returns a :class:`Report`: ``report.ok`` is True when no
problem was found; ``report.format()`` is a one-screen summary followed by
every problem. Checks: unreadable images, images without a label row, mask or
box (masks and boxes only when the dataset has them at all), mask values
outside 0..3, masks holding more than one object class, class labels that
disagree with the mask or the box, boxes outside the image, boxes that do not
match their mask (IoU with the mask's tight box below :data:`MIN_BOX_IOU`),
and csv rows naming missing images.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bbc1k import layout
from bbc1k.layout import IMAGE_SUFFIXES, read_provenance, tight_box

__all__ = ["MIN_BOX_IOU", "Report", "find_dataset", "validate"]

MIN_BOX_IOU = 0.5
"""A box whose IoU with its mask's tight box is below this is a mismatch: loose
enough for hand-drawn boxes, tight enough to catch a box on the wrong object."""
BOX_SLACK_PX = 1.0
"""How far (pixels) a box may poke past the image border before it is 'outside'."""
MAX_LISTED = 5  # names quoted per problem kind in the summary's notes


def find_dataset(path: Path | str) -> Path:
    """The dataset folder of ``path``: ``path`` itself when it holds ``images/``,
    else ``path/bbc_train``. Raises FileNotFoundError naming what is missing."""
    path = Path(path)
    for candidate in (path, path / layout.DATASET_DIRNAME):
        if (candidate / layout.IMAGES_DIR).is_dir():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    raise FileNotFoundError(
        f"{path} is not a dataset: neither it nor {path / layout.DATASET_DIRNAME} holds an "
        f"{layout.IMAGES_DIR}/ folder")


@dataclass
class Report:
    dataset: Path
    n_images: int = 0
    class_counts: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)
    has_labels: bool = False
    has_masks: bool = False
    has_boxes: bool = False
    n_masks: int = 0
    n_boxes: int = 0
    deep: bool = True
    source: dict | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"dataset {self.dataset}: {self.n_images} images"]
        if self.source:
            src = self.source.get("source", "?")
            extra = self.source.get("url") or ", ".join(
                f"{k}={self.source[k]}" for k in ("n", "seed", "size") if k in self.source)
            lines.append(f"  source:       {src}" + (f" ({extra})" if extra else ""))
        if self.class_counts:
            per_class = ", ".join(f"{c} {self.class_counts.get(c, 0)}" for c in layout.OBJECT_CLASSES)
            others = [f"{c} {n}" for c, n in self.class_counts.items() if c not in layout.OBJECT_CLASSES]
            lines.append(f"  classes:      {per_class}" + (f", {', '.join(others)}" if others else ""))
        if self.sizes:
            lines.append("  image sizes:  " + ", ".join(
                f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(4))
                + (f" and {len(self.sizes) - 4} more sizes" if len(self.sizes) > 4 else ""))
        elif not self.deep:
            lines.append("  image sizes:  not read (quick check)")
        lines.append("  labels:       " + ", ".join([
            f"class labels {'yes' if self.has_labels else 'ABSENT'}",
            f"masks {f'yes ({self.n_masks})' if self.has_masks else 'absent'}",
            f"boxes {f'yes ({self.n_boxes})' if self.has_boxes else 'absent'}",
        ]))
        if not (self.has_masks or self.has_boxes):
            lines.append("                boxes and masks are absent: this dataset can train the classifier "
                         "only (use --source welchlabs or synthetic for detection and segmentation)")
        if self.deep and self.has_boxes and self.has_masks:
            lines.append(f"  box check:    a box matches its mask when IoU with the mask's tight box "
                         f">= {MIN_BOX_IOU}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def format(self) -> str:
        """The summary, then every problem (or OK)."""
        if self.ok:
            return self.summary() + "\nOK: no problems found"
        head = f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''} found:"
        return "\n".join([self.summary(), head, *(f"  - {p}" for p in self.problems)])


def _iou(a: list[float], b: tuple[int, int, int, int]) -> float:
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _check_labels(dataset: Path, images: set[str], report: Report) -> dict[str, str]:
    """Labels by image file name; records problems of the csv itself."""
    csv_path = dataset / layout.LABELS_CSV
    if not csv_path.is_file():
        report.problems.append(f"{layout.LABELS_CSV} is missing: images have no class labels")
        return {}
    try:
        rows = layout.read_labels(dataset)
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as e:
        report.problems.append(f"{layout.LABELS_CSV} cannot be read: {e}")
        return {}
    report.has_labels = True
    labels: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{layout.LABELS_CSV} line {line}"
        if row.label not in layout.OBJECT_CLASSES:
            report.problems.append(f"{where}: unknown class {row.label!r} for {row.filename} "
                                   f"(expected one of {', '.join(layout.OBJECT_CLASSES)})")
        elif row.label_index != layout.label_index(row.label):
            report.problems.append(f"{where}: {row.filename} has label_index {row.label_index} but "
                                   f"{row.label} is {layout.label_index(row.label)}")
        if row.filename in labels:
            report.problems.append(f"{where}: {row.filename} is labelled twice")
        elif row.filename not in images:
            report.problems.append(f"{where}: names a missing image {row.filename}")
        labels[row.filename] = row.label
    for name in sorted(images - labels.keys()):
        report.problems.append(f"{name}: image has no row in {layout.LABELS_CSV}")
    return labels


def _read_boxes(dataset: Path, images: set[str], report: Report) -> dict[str, tuple[str, list[float]]]:
    path = dataset / layout.BBOXES_JSON
    if not path.is_file():
        return {}
    try:
        boxes = layout.read_boxes(dataset)
        entries = {im["file_name"] for im in json.loads(path.read_text()).get("images", [])}
    except (ValueError, KeyError, TypeError, OSError) as e:
        report.problems.append(f"{layout.BBOXES_JSON} cannot be read: {e!r}")
        return {}
    report.has_boxes = True
    report.n_boxes = len(boxes.keys() & images)
    absent = entries - images
    if absent:
        report.notes.append(f"{layout.BBOXES_JSON} lists {len(entries)} image entries; {len(absent)} name no file "
                            f"in {layout.IMAGES_DIR}/ (normal for the original bbc_train.zip; they are ignored)")
    for name in sorted(images - boxes.keys()):
        report.problems.append(f"{name}: image has no box in {layout.BBOXES_JSON}")
    return boxes


def _check_image(dataset: Path, name: str, label: str | None, box: tuple[str, list[float]] | None,
                 with_masks: bool, report: Report) -> None:
    try:
        with Image.open(layout.image_path(dataset, name)) as im:
            im.load()
            size = im.size
    except Exception as e:  # PIL raises many types for broken files
        report.problems.append(f"{name}: unreadable image ({type(e).__name__}: {e})")
        return
    report.sizes[size] += 1
    w, h = size
    if box is not None:
        box_class, (bx, by, bw, bh) = box[0], box[1]
        if label is not None and box_class != label:
            report.problems.append(f"{name}: box class {box_class!r} disagrees with the label {label!r}")
        if bw <= 0 or bh <= 0 or bx < -BOX_SLACK_PX or by < -BOX_SLACK_PX \
                or bx + bw > w + BOX_SLACK_PX or by + bh > h + BOX_SLACK_PX:
            report.problems.append(f"{name}: box [x={bx:g}, y={by:g}, w={bw:g}, h={bh:g}] is outside "
                                   f"the {w}x{h} image")
    if not with_masks:
        return
    mpath = layout.mask_path(dataset, name)
    if not mpath.is_file():
        report.problems.append(f"{name}: image has no mask {layout.MASKS_DIR}/{mpath.name}")
        return
    try:
        with Image.open(mpath) as m:
            mode = m.mode
            mask = np.asarray(m)
    except Exception as e:
        report.problems.append(f"{layout.MASKS_DIR}/{mpath.name}: unreadable mask ({type(e).__name__}: {e})")
        return
    report.n_masks += 1
    if mask.ndim != 2:
        report.problems.append(f"{layout.MASKS_DIR}/{mpath.name}: mask has mode {mode}, expected one "
                               "channel (one uint8 per pixel)")
        return
    if mask.shape != (h, w):
        report.problems.append(f"{layout.MASKS_DIR}/{mpath.name}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                               f"image is {w}x{h}")
        return
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= len(layout.MASK_CLASSES)]
    if bad:
        report.problems.append(f"{layout.MASKS_DIR}/{mpath.name}: mask values outside 0..3: {bad[:10]}")
        return
    classes = [layout.MASK_CLASSES[int(v)] for v in values if v > 0]
    if len(classes) > 1:
        report.problems.append(f"{layout.MASKS_DIR}/{mpath.name}: mask holds more than one object class: "
                               f"{', '.join(classes)}")
        return
    if not classes:
        report.problems.append(f"{layout.MASKS_DIR}/{mpath.name}: mask is empty (no object pixels)"
                               + (f" but the label says {label}" if label else ""))
        return
    if label is not None and classes[0] != label:
        report.problems.append(f"{name}: class label {label!r} disagrees with the mask ({classes[0]})")
    if box is not None:
        iou = _iou(box[1], tight_box(mask))
        if iou < MIN_BOX_IOU:
            report.problems.append(f"{name}: box does not match the mask (IoU {iou:.2f} with the mask's "
                                   f"tight box < {MIN_BOX_IOU})")


def validate(path: Path | str, *, deep: bool = True, progress: bool = False) -> Report:
    """Check the dataset at ``path`` (the ``bbc_train`` folder or its parent).

    ``deep=False`` checks the files and label tables only, without decoding
    images or masks (quick enough to run before every notebook).
    """
    try:
        dataset = find_dataset(path)
    except FileNotFoundError as e:
        return Report(Path(path), deep=deep, problems=[str(e)])
    report = Report(dataset, deep=deep)
    try:
        report.source = read_provenance(dataset)
    except (OSError, ValueError):
        report.source = None
    image_dir = dataset / layout.IMAGES_DIR
    names = sorted(p.name for p in image_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    others = [p.name for p in image_dir.iterdir() if not p.name.startswith(".") and p.name not in names]
    if others:
        report.notes.append(f"{len(others)} non-image entries in {layout.IMAGES_DIR}/ ignored, e.g. "
                            f"{', '.join(sorted(others)[:MAX_LISTED])}")
    images = set(names)
    report.n_images = len(names)
    if not names:
        report.problems.append(f"{image_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    labels = _check_labels(dataset, images, report)
    report.class_counts = Counter(labels[n] for n in names if n in labels)
    mask_dir = dataset / layout.MASKS_DIR
    mask_files = {p.name for p in mask_dir.iterdir() if p.is_file() and not p.name.startswith(".")} \
        if mask_dir.is_dir() else set()
    report.has_masks = bool(mask_files)
    if report.has_masks:
        orphans = mask_files - {layout.mask_path(dataset, n).name for n in names}
        if orphans:
            report.notes.append(f"{len(orphans)} masks have no image, e.g. {', '.join(sorted(orphans)[:MAX_LISTED])}")
    boxes = _read_boxes(dataset, images, report)
    if not deep:
        if report.has_masks:
            for n in names:
                if layout.mask_path(dataset, n).name not in mask_files:
                    report.problems.append(f"{n}: image has no mask {layout.MASKS_DIR}/{Path(n).stem}.png")
            report.n_masks = len(mask_files) - len(orphans)
        return report
    from tqdm.auto import tqdm

    for name in tqdm(names, desc="validating", unit="img", disable=not progress, leave=False):
        _check_image(dataset, name, labels.get(name), boxes.get(name), report.has_masks, report)
    return report
