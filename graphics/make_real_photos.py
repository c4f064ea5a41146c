"""Ship real photos in the repository: ``python -m graphics.make_real_photos --photos DIR``.

From the 600 real bbc1k photos (``--photos`` or ``$BBC1K_PHOTOS``: one
subfolder per class), writes

- ``real-photos/train/<class>/*.jpg``: the photos the demo models learn
  from, and ``real-photos/held-out/<class>/*.jpg``: those they are measured
  on, never learnt from; downscaled to 256x192 (a few MB in all), with their
  notice (``real-photos/README.md``, Apache-2.0);
- ``app/static/examples/real-<class>.jpg``: one photo of each class for the
  app's page, 384x288.

The held-out photos are fold ``HELD_OUT`` of the seeded stratified 5-fold
split (``bbc1k.train.data.stratified_folds``); the page's examples come from
them too. Deterministic.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from bbc1k.train.data import find_images, load_image, stratified_folds
from bench.common import add_photos_arg, photos_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "real-photos"
EXAMPLES = ROOT / "app" / "static" / "examples"
HELD_OUT, FOLDS, SEED = 0, 5, 0
SIZE = (192, 256)          # (H, W) of the shipped photos: the recipes train at 96x128
EXAMPLE_SIZE = (288, 384)


def save(path: Path, size: tuple[int, int], out: Path, quality: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(load_image(path, size)).save(out, "JPEG", quality=quality, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photos_arg(ap)
    args = ap.parse_args(argv)
    classes, paths, labels = find_images(photos_dir(args.photos))
    held_out = set(stratified_folds(labels, FOLDS, SEED)[HELD_OUT].tolist())
    for part in ("train", "held-out"):
        shutil.rmtree(SHIPPED / part, ignore_errors=True)
    examples: dict[str, Path] = {}
    for i, (path, label) in enumerate(zip(paths, labels)):
        name = classes[label]
        if i in held_out:
            examples.setdefault(name, path)
        save(path, SIZE, SHIPPED / ("held-out" if i in held_out else "train") / name / path.name, quality=85)
    for name, path in examples.items():
        save(path, EXAMPLE_SIZE, EXAMPLES / f"real-{name}.jpg", quality=82)
    shipped = sorted(SHIPPED.glob("*/*/*.jpg"))
    size_mb = sum(p.stat().st_size for p in shipped) / 2**20
    print(f"{len(shipped)} photos in {SHIPPED} ({size_mb:.1f} MB), {len(held_out)} of them held out; "
          f"examples: {', '.join(p.name for p in examples.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
