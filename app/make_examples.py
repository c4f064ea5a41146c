"""Write the page's example photos (app/static/examples/<class>.jpg) from the
synthetic dataset: ``python app/make_examples.py``. Deterministic."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bbc1k.layout import OBJECT_CLASSES
from bbc1k.synth import render_sample

SEED = 7
OUT = Path(__file__).resolve().parent / "static" / "examples"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for label in OBJECT_CLASSES:
        index = 0
        while True:  # the first sample of this class
            im, _, got = render_sample(SEED, index, classes=[label])
            if got == label:
                break
            index += 1
        path = OUT / f"{label}.jpg"
        im.save(path, "JPEG", quality=82, optimize=True)
        print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
