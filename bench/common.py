"""What the benchmarks share: where the real photos are, and the machine's load."""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

PHOTOS_ENV = "BBC1K_PHOTOS"
"""Environment variable naming a folder of real photos, one subfolder per class."""


def add_photos_arg(ap: argparse.ArgumentParser, help_extra: str = "") -> None:
    """``--photos DIR``: the real photos a benchmark measures on."""
    ap.add_argument("--photos", type=Path, default=None, metavar="DIR",
                    help=f"folder of real photos, one subfolder per class (default: ${PHOTOS_ENV}){help_extra}")


def photos_dir(given: str | os.PathLike | None) -> Path:
    """The photos folder: ``given`` (from ``--photos``), else ``$BBC1K_PHOTOS``.
    Exits with a message naming both when neither points at a folder."""
    value = given if given is not None else os.environ.get(PHOTOS_ENV)
    if not value:
        raise SystemExit(f"no photos: pass --photos DIR or set {PHOTOS_ENV}=DIR "
                         "(a folder with one subfolder of images per class, e.g. brick/ ball/ cylinder/)")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        where = "--photos" if given is not None else PHOTOS_ENV
        raise SystemExit(f"{where}={value}: no such folder")
    return folder


def load_note() -> str:
    """The load average, printed beside every figure: a busy machine's figures are not figures."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average: unknown"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def spread(values: list[float], fmt: str = ".1%") -> str:
    """``mean M, min A, max B`` of repeated runs, in one wording for every benchmark."""
    return (f"mean {statistics.mean(values):{fmt}}, min {min(values):{fmt}}, "
            f"max {max(values):{fmt}}")


def save_contact_sheet(tiles: list, out: Path, columns: int = 8) -> None:
    """Save equal-sized PIL images (``tiles``) as one grid picture at ``out``,
    ``columns`` wide: photos to look at side by side."""
    from PIL import Image

    w, h = tiles[0].size if tiles else (1, 1)
    sheet = Image.new("RGB", (columns * w, max(1, -(-len(tiles) // columns)) * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    sheet.save(out)
