"""Write the app page's example photos (app/static/examples/<class>.jpg) from the
synthetic dataset: ``python -m graphics.make_examples``. Deterministic."""
from __future__ import annotations

from pathlib import Path

from bbc1k.layout import OBJECT_CLASSES
from bbc1k.synth import render_sample

SEED = 7
OUT = Path(__file__).resolve().parent.parent / "app" / "static" / "examples"


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
