"""The dataset for notebooks in one call: ``path = bbc1k.data.get()``.

``get()`` reuses a dataset already in place, else installs one (see
:mod:`bbc1k.sources`); ``needs=("boxes",)`` or ``("masks",)`` says which
annotations the lesson cannot do without. ``labels_frame(path)`` gives the
labels as a pandas DataFrame for fastai DataBlocks.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from bbc1k import layout
from bbc1k.download import DownloadError, probe
from bbc1k.layout import DATASET_DIRNAME, MASK_CLASSES, OBJECT_CLASSES, read_boxes, read_labels, read_provenance
from bbc1k.sources import ANNOTATIONS, SOURCES, DataError, install, sources_with
from bbc1k.validate import Report, find_dataset, validate

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MASK_CLASSES", "OBJECT_CLASSES", "DataError", "get", "labels_frame", "read_boxes", "read_labels"]

AUTO_PROBE_TIMEOUT_S = 5.0
"""How long ``get("auto")`` waits for the original host before generating instead."""


def _check_needs(needs: Iterable[str]) -> tuple[str, ...]:
    needs = tuple(needs)
    unknown = [n for n in needs if n not in ANNOTATIONS]
    if unknown:
        raise ValueError(f"needs={needs!r}: {', '.join(map(repr, unknown))} unknown; "
                         f"a dataset may provide {' and '.join(ANNOTATIONS)} besides class labels")
    return needs


def _missing(report: Report, needs: tuple[str, ...]) -> list[str]:
    have = {"boxes": report.has_boxes, "masks": report.has_masks}
    return [n for n in needs if not have[n]]


def _use_instead(needs: tuple[str, ...]) -> str:
    names = sources_with(needs)
    return " or ".join(f'"{n}"' for n in names)


def _existing(target: Path) -> Report | None:
    """The quick report of a usable dataset at ``target``, or None when there is none."""
    if not (target / layout.IMAGES_DIR).is_dir():
        return None
    report = validate(target, deep=False)
    return report if report.n_images and report.has_labels else None


def _matches(target: Path, source: str, n: int, seed: int, size: tuple[int, int]) -> bool:
    """True when the dataset at ``target`` is what ``source`` (and its settings) would install."""
    made = read_provenance(target) or {}
    if source == "auto" or not made:
        return True  # any dataset will do, or one put there by hand
    if source == "synthetic":
        return made.get("source") == "synthetic" and made.get("n") == n and made.get("seed") == seed \
            and tuple(made.get("size", ())) == tuple(size)
    return made.get("source") == source


def _require(path: Path, needs: tuple[str, ...], what: str) -> Path:
    lacking = _missing(validate(path, deep=False), needs)
    if lacking:
        raise DataError(f"{what} at {path} has no {' and no '.join(lacking)}, which this lesson needs; "
                        f"use DATA_SOURCE = {_use_instead(needs)} instead")
    return path


def get(
    source: str = "auto",
    dest: Path | str = "data",
    *,
    needs: Iterable[str] = (),
    url: str | None = None,
    sha256: str | None = None,
    n_images: int = 1000,
    seed: int = 0,
    size: tuple[int, int] = (512, 384),
    progress: bool = True,
) -> Path:
    """The path of ``dest/bbc_train``, installing it first when needed.

    ``source`` is ``"welchlabs"``, ``"github"``, ``"synthetic"`` or ``"auto"``:
    the original archive when its host answers, else (with a short
    explanation) a synthetic set of ``n_images`` images. ``needs`` names the
    annotations the caller cannot do without (``"boxes"``, ``"masks"``): a
    source without them is refused at once with the names of those that have
    them. A dataset already in place is reused when it has them and fits the
    request (see ``.bbc1k-source.json``); with ``"auto"``, one that lacks them
    is replaced, unless it was put there by hand (then DataError: nothing of
    yours is deleted).
    """
    needs = _check_needs(needs)
    if source != "auto" and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected auto or one of {', '.join(SOURCES)}")
    if source != "auto" and not set(needs) <= set(SOURCES[source].provides):
        raise DataError(f"the {source} source has {SOURCES[source].labels}, and this lesson needs "
                        f"{' and '.join(needs)}: set DATA_SOURCE = {_use_instead(needs)} (or \"auto\")")
    target = Path(dest) / DATASET_DIRNAME
    report = _existing(target)
    lacking = _missing(report, needs) if report else []
    if report and not lacking and _matches(target, source, n_images, seed, size):
        print(f"using the dataset already at {target}")
        return target
    if lacking and source == "auto":
        made = read_provenance(target)
        if not made:
            raise DataError(f"the dataset at {target} has no {' and no '.join(lacking)}, which this lesson "
                            "needs, and was put there by hand, so it is left alone: move it away, or set "
                            f"DATA_DIR to another folder, or DATA_SOURCE = {_use_instead(needs)}")
        print(f"the {made.get('source', '')} dataset at {target} has no {' and no '.join(lacking)}, which this "
              "lesson needs: replacing it with one that has them.")
    if source != "auto":
        path = install(source, dest, url=url, sha256=sha256, n=n_images, seed=seed, size=size, progress=progress)
        return _require(path, needs, f"the {source} dataset")
    original = url or SOURCES["welchlabs"].url
    reason = probe(original, timeout=AUTO_PROBE_TIMEOUT_S)
    if reason is None:
        try:
            return _require(install("welchlabs", dest, url=url, sha256=sha256, progress=progress), needs,
                            "the downloaded dataset")
        except (DownloadError, DataError) as e:
            reason = str(e).splitlines()[0]
    print(f"the original dataset is out of reach ({reason}).\n"
          f"Using a synthetic dataset instead: {n_images} generated images with exact masks and boxes "
          f"(seed {seed}). For the real photos, run get('welchlabs', url=<mirror>) when online.")
    return install("synthetic", dest, n=n_images, seed=seed, size=size, progress=progress)


def labels_frame(dataset: Path | str) -> pd.DataFrame:
    """One row per labelled image that exists: ``filename``, ``label``,
    ``label_index``; plus ``x0, y0, x1, y1`` (box corners in pixels, NaN when an
    image has none) when the dataset has boxes, and ``mask`` (file name in
    ``masks/``) when it has masks."""
    import pandas as pd

    ds = find_dataset(dataset)
    rows = [r for r in read_labels(ds) if layout.image_path(ds, r.filename).is_file()]
    frame = pd.DataFrame({
        "filename": [r.filename for r in rows],
        "label": [r.label for r in rows],
        "label_index": [r.label_index for r in rows],
    })
    if (ds / layout.BBOXES_JSON).is_file():
        boxes = read_boxes(ds)
        nan = float("nan")
        corners = [boxes[r.filename][1] if r.filename in boxes else [nan] * 4 for r in rows]
        frame["x0"] = [b[0] for b in corners]
        frame["y0"] = [b[1] for b in corners]
        frame["x1"] = [b[0] + b[2] for b in corners]
        frame["y1"] = [b[1] + b[3] for b in corners]
    if (ds / layout.MASKS_DIR).is_dir():
        frame["mask"] = [layout.mask_path(ds, r.filename).name for r in rows]
    return frame
