"""Archives built in memory for the data-layer tests (from the synthetic set)."""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from bbc1k import layout


def zip_members(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_dataset(dataset: Path, prefix: str = "bbc_train/", extra: list[tuple[str, bytes]] = ()) -> bytes:
    """The dataset's files under ``prefix``, like the original bbc_train.zip."""
    files = sorted(p for p in dataset.rglob("*") if p.is_file() and not p.name.startswith("."))
    members = [(prefix + p.relative_to(dataset).as_posix(), p.read_bytes()) for p in files]
    # macOS zips carry resource forks; they must be skipped, not installed.
    members += [(f"__MACOSX/{prefix}._bboxes.json", b"junk"), (f"{prefix}.DS_Store", b"junk"), *extra]
    return zip_members(members)


def zip_github(dataset: Path) -> bytes:
    """Shaped like github.com/unccv/deep_learning/archive/refs/heads/master.zip."""
    top = "deep_learning-master/"
    members = [(top + "README.md", b"# Deep Learning\n"), (top + "graphics/figure.png", b"\x89PNG not read")]
    counts: dict[str, int] = {}
    for row in layout.read_labels(dataset):
        k = counts[row.label] = counts.get(row.label, -1) + 1
        members.append((f"{top}data/{row.label}/{row.label}_{k:04d}.jpg",
                        layout.image_path(dataset, row.filename).read_bytes()))
    return zip_members(members)


def symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3  # unix
    return info
