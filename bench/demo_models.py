"""How the app's demo models (trained on synthetic images only) do on real photos.

    python -m bench.demo_models [MODELS_DIR] [--photos DIR]

For every ``.onnx`` in MODELS_DIR (default ``models/``, as scripts/main.sh
leaves it): models with class scores are scored on the photos' class folders
(``--photos`` or $BBC1K_PHOTOS); a segmenter is scored by the object class
covering most of its predicted mask. The real photos carry class labels only,
so boxes and masks themselves are not scored here. Figures, not pass/fail.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from bbc1k.modelmeta import read_onnx_meta
from bbc1k.serving import decode_image, open_session, prepare
from bench.common import add_photos_arg, load_note, photos_dir

REPO = Path(__file__).resolve().parent.parent


def photos(folder: Path) -> list[tuple[Path, str]]:
    return [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg"))]


def predicted_class(meta, outputs: dict[str, np.ndarray]) -> str:
    logits = meta.output("class_logits")
    if logits is not None:
        return meta.classes[int(outputs[logits.name][0].argmax())]
    labels = outputs[meta.output("mask_logits").name][0].argmax(0)
    objects = np.bincount(labels.ravel(), minlength=len(meta.classes))[1:]
    return meta.classes[1 + int(objects.argmax())] if objects.any() else meta.classes[0]


def score(model: Path, items: list[tuple[Path, str]]) -> None:
    meta = read_onnx_meta(str(model))
    if meta.output("class_logits") is None and meta.output("mask_logits") is None:
        print(f"{model.name:28s} {meta.task}: no class output, not scored")
        return
    session = open_session(model)
    names = [o.name for o in session.get_outputs()]
    confusion: Counter = Counter()
    for path, truth in items:
        x, _ = prepare(decode_image(path.read_bytes()).image, meta)
        outputs = dict(zip(names, session.run(None, {meta.input_name: x[None]})))
        confusion[truth, predicted_class(meta, outputs)] += 1
    correct = sum(n for (t, p), n in confusion.items() if t == p)
    truths = sorted({t for t, _ in confusion})
    print(f"{model.name:28s} {meta.task:16s} accuracy {correct / len(items):.1%} on {len(items)} photos")
    for t in truths:
        row = "  ".join(f"{p} {confusion[t, p]:3d}" for p in truths + ["background"] if confusion[t, p])
        print(f"    {t:9s} -> {row}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="?", type=Path, default=REPO / "models",
                    help="folder of exported .onnx models (default models/)")
    add_photos_arg(ap)
    a = ap.parse_args(argv)
    models = a.models
    items = photos(photos_dir(a.photos))
    majority = Counter(t for _, t in items).most_common(1)[0]
    print(f"{len(items)} real photos; always answering {majority[0]!r} scores {majority[1] / len(items):.1%} "
          f"({load_note()})")
    for model in sorted(models.glob("*.onnx")):
        score(model, items)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
