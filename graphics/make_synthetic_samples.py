"""Draw graphics/synthetic-samples.jpg: a grid of synthetic samples with their masks and boxes.

    python -m graphics.make_synthetic_samples [--seed 0] [--n 12]

Each tile shows the rendered picture with its mask tinted in the class colour,
the mask's outline and tight box, and the label.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bbc1k.layout import tight_box
from bbc1k.synth import render_sample

OUT = Path(__file__).with_name("synthetic-samples.jpg")
TINT = {1: (255, 80, 40), 2: (40, 200, 255), 3: (140, 255, 60)}  # brick, ball, cylinder
TILE = (320, 240)
COLS = 4


def tile(seed: int, index: int) -> Image.Image:
    image, mask, label = render_sample(seed, index)
    value = int(mask.max())
    pic = np.asarray(image, np.float32)
    inside = mask > 0
    tint = np.array(TINT[value], np.float32)
    pic[inside] = 0.8 * pic[inside] + 0.2 * tint
    # The outline: mask pixels with a background neighbour.
    padded = np.pad(inside, 1)
    edge = inside & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    pic[edge] = tint
    out = Image.fromarray(pic.astype(np.uint8), "RGB")
    x, y, w, h = tight_box(mask)
    draw = ImageDraw.Draw(out)
    draw.rectangle((x - 1, y - 1, x + w, y + h), outline=TINT[value], width=2)
    out = out.resize(TILE, Image.LANCZOS)
    draw = ImageDraw.Draw(out)
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:
        font = ImageFont.load_default()
    draw.rectangle((0, 0, 110, 24), fill=(0, 0, 0))
    draw.text((6, 2), label, fill=TINT[value], font=font)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = (args.n + COLS - 1) // COLS
    gap = 4
    sheet = Image.new("RGB", (COLS * TILE[0] + (COLS - 1) * gap, rows * TILE[1] + (rows - 1) * gap), (255, 255, 255))
    for i in range(args.n):
        sheet.paste(tile(args.seed, i), ((i % COLS) * (TILE[0] + gap), (i // COLS) * (TILE[1] + gap)))
    sheet.save(args.out, quality=82, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
