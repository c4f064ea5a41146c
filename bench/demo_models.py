"""How the app's demo models do on real photos they never learnt from.

    python -m bench.demo_models [MODELS_DIR] [--photos DIR] [--sheet boxes.png]

For every ``.onnx`` in MODELS_DIR (default ``models/``, as scripts/main.sh
leaves it), scored on the class folders of ``--photos`` (default
``real-photos/held-out``: the shipped photos the demo models do not train
on; or ``$BBC1K_PHOTOS``): a classifier by its top class, a segmenter by the
object class covering most of its predicted mask (``bbc1k.photo_scores``).
The real photos carry class labels only, so boxes are not scored by numbers:
``--sheet FILE`` draws each detector's box on every photo, a contact sheet
to check by eye that the box sits on the object. Figures, not pass/fail.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from bbc1k.folders import find_images
from bbc1k.modelmeta import read_onnx_meta
from bbc1k.photo_scores import score_model, scored_kind
from bbc1k.serving import decode_image, open_session, prepare
from bbc1k.serving.postprocess import box_to_image
from bench.common import PHOTOS_ENV, add_photos_arg, load_note, photos_dir, save_contact_sheet

REPO = Path(__file__).resolve().parent.parent
HELD_OUT = REPO / "real-photos" / "held-out"


def box_sheet(model: Path, folder: Path, out: Path, columns: int = 8) -> None:
    """Draw ``model``'s box on every photo of ``folder``, in a grid, each captioned with its class."""
    from PIL import ImageDraw

    meta = read_onnx_meta(str(model))
    spec = meta.output("box")
    session = open_session(model)
    classes, paths, labels = find_images(folder)
    tile, tiles = (192, 144), []
    for i, (path, label) in enumerate(zip(paths, labels)):
        image = decode_image(path.read_bytes()).image
        x, fit = prepare(image, meta)
        (box,) = session.run([spec.name], {meta.input_name: x[None]})
        x0, y0, x1, y1 = box_to_image(box[0], fit, box_range=tuple(spec.box_range or (-1.0, 1.0)))
        sx, sy = tile[0] / image.width, tile[1] / image.height
        small = image.resize(tile)
        draw = ImageDraw.Draw(small)
        draw.rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=(255, 0, 0), width=3)
        draw.text((4, 2), f"{i} {classes[label]}", fill=(255, 255, 0))
        tiles.append(small)
    save_contact_sheet(tiles, out, columns)
    print(f"{model.name}: its boxes on {len(paths)} photos drawn in {out}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="?", type=Path, default=REPO / "models",
                    help="folder of exported .onnx models (default models/)")
    add_photos_arg(ap, f" (default: {HELD_OUT.relative_to(REPO)})")
    ap.add_argument("--sheet", type=Path, default=None, metavar="FILE",
                    help="draw each detector's boxes on the photos into FILE-<model>.png")
    a = ap.parse_args(argv)
    folder = photos_dir(a.photos) if a.photos or os.environ.get(PHOTOS_ENV) else HELD_OUT
    _, _, labels = find_images(folder)
    majority = Counter(labels.tolist()).most_common(1)[0][1]
    print(f"{len(labels)} real photos in {folder}; always answering the largest class scores "
          f"{majority / len(labels):.1%} ({load_note()})")
    for model in sorted(a.models.glob("*.onnx")):
        meta = read_onnx_meta(str(model))
        if scored_kind(meta):
            score = score_model(model, folder)
            print(f"  {score.line()}")
            for truth in sorted({t for t, _ in score.confusion}):
                row = "  ".join(f"{answer} {n}" for (t, answer), n in sorted(score.confusion.items()) if t == truth)
                print(f"      {truth:9s} -> {row}")
        if a.sheet and meta.output("box") is not None:
            box_sheet(model, folder, a.sheet.with_name(f"{a.sheet.stem}-{model.stem}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
