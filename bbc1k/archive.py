"""Safe zip extraction: into a temporary folder beside the destination, never outside it.

Members with absolute paths or ``..``, symlinks, and archives that inflate to
more than a sane size (zip bombs) are refused before anything is written;
``__MACOSX/`` and ``.DS_Store`` are skipped. On any failure the temporary
folder is removed, so the caller's destination is untouched.
"""
from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

__all__ = ["ArchiveError", "extract_zip", "MAX_TOTAL_BYTES", "MAX_RATIO"]

MAX_TOTAL_BYTES = 2 << 30
"""Refuse archives whose members add up to more than this (2 GiB) uncompressed."""
MAX_RATIO = 100
"""Refuse a member larger than RATIO_MIN_BYTES that inflates more than this many times."""
RATIO_MIN_BYTES = 10 << 20
_SKIP_PARTS = {"__MACOSX"}
_SKIP_NAMES = {".DS_Store", "Thumbs.db"}


class ArchiveError(ValueError):
    """An archive that is not a zip, or one refused as unsafe."""


def _member_path(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The member's relative path, None to skip it; raises when it is unsafe."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive.name}: refused: member {info.filename!r} has an absolute path")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveError(f"{archive.name}: refused: member {info.filename!r} points outside the folder (..)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{archive.name}: refused: member {info.filename!r} is a symbolic link")
    if _SKIP_PARTS & set(parts) or (parts and parts[-1] in _SKIP_NAMES) or not parts:
        return None
    return PurePosixPath(*[p for p in parts if p != "."])


def _check_sizes(infos: list[zipfile.ZipInfo], archive: Path, max_total: int) -> None:
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise ArchiveError(f"{archive.name}: refused: it would inflate to {total:,} bytes, "
                           f"more than the {max_total:,} allowed (a zip bomb?)")
    for i in infos:
        if i.file_size > RATIO_MIN_BYTES and i.file_size > MAX_RATIO * max(i.compress_size, 1):
            raise ArchiveError(f"{archive.name}: refused: member {i.filename!r} inflates "
                               f"{i.file_size / max(i.compress_size, 1):,.0f} times (a zip bomb?)")


def _copy_limited(src, dst, budget: int, archive: Path) -> int:
    """Copy, counting real bytes: a forged header cannot smuggle more than the budget."""
    copied = 0
    for block in iter(lambda: src.read(1 << 20), b""):
        copied += len(block)
        if copied > budget:
            raise ArchiveError(f"{archive.name}: refused: members inflate past the size limit (a zip bomb?)")
        dst.write(block)
    return copied


def extract_zip(archive: Path | str, beside: Path | str, *, max_total: int = MAX_TOTAL_BYTES) -> Path:
    """Extract ``archive`` into a new temporary folder inside ``beside`` and return it.

    The caller moves what it needs into place and removes the folder. Raises
    :class:`ArchiveError` (leaving nothing behind) for a file that is not a
    zip, an unsafe member, or a zip bomb.
    """
    archive, beside = Path(archive), Path(beside)
    beside.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{archive.name} is not a readable zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        plan = [(i, p) for i in infos if (p := _member_path(i, archive)) is not None]
        _check_sizes([i for i, _ in plan], archive, max_total)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=beside))
        try:
            root = tmp.resolve()
            budget = max_total
            for info, rel in plan:
                target = tmp / rel
                if not target.resolve().is_relative_to(root):  # belt and braces after the name checks
                    raise ArchiveError(f"{archive.name}: refused: member {info.filename!r} escapes the folder")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    budget -= _copy_limited(src, dst, budget, archive)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ArchiveError(f"{archive.name} is corrupt ({e})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tmp
