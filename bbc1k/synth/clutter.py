"""Desk clutter around the object: magazines, pen pots, mugs, tape, scissors, plants,
cables, keyboards and plain shapes, with grain and blotches on some of them, plus
the things that may hide part of it (leaves, cables, pens, fingers) and the hand
that holds it up.

Items are drawn with Pillow into a colour layer and a coverage layer, so the
scene can cast their soft shadows and, for occluders, remove exactly the
covered pixels from the object's mask.
"""
from __future__ import annotations

import functools
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bbc1k.synth.noise import fractal_noise, smooth_noise

Colour = tuple[int, int, int]

VIVID: list[Colour] = [(220, 40, 40), (240, 130, 30), (245, 205, 40), (60, 160, 70), (40, 90, 200), (120, 60, 160),
                       (230, 230, 230), (30, 30, 35), (200, 60, 130), (40, 170, 190), (150, 150, 155)]
SKIN: list[Colour] = [(225, 180, 150), (200, 150, 120), (160, 110, 80), (110, 75, 55), (235, 200, 175)]


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _c(rng: np.random.Generator, palette: list[Colour] = VIVID, spread: int = 25) -> Colour:
    base = np.array(palette[rng.integers(len(palette))])
    return tuple(int(v) for v in np.clip(base + rng.integers(-spread, spread + 1, 3), 0, 255))


def _shade(c: Colour, f: float) -> Colour:
    return tuple(int(min(255, max(0, v * f))) for v in c)


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 36) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return list(zip(cx + x * c - y * s, cy + x * s + y * c))


def _curve(rng: np.random.Generator, p0: np.ndarray, p3: np.ndarray, bend: float, n: int = 24) -> list[tuple[float, float]]:
    """A cubic Bezier from p0 to p3 with random control points ``bend`` pixels off the line."""
    p1 = p0 + (p3 - p0) / 3 + rng.normal(0, bend, 2)
    p2 = p0 + 2 * (p3 - p0) / 3 + rng.normal(0, bend, 2)
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
    return [tuple(p) for p in pts]


class Layer:
    """A colour image and its coverage, painted in order (later items on top)."""

    def __init__(self, w: int, h: int) -> None:
        self.colour = Image.new("RGB", (w, h))
        self.alpha = Image.new("L", (w, h))
        self.draw = ImageDraw.Draw(self.colour)
        self.mask = ImageDraw.Draw(self.alpha)

    def polygon(self, pts, fill: Colour) -> None:
        self.draw.polygon(pts, fill=fill)
        self.mask.polygon(pts, fill=255)

    def line(self, pts, fill: Colour, width: int) -> None:
        width = max(1, int(width))
        self.draw.line(pts, fill=fill, width=width, joint="curve")
        self.mask.line(pts, fill=255, width=width, joint="curve")

    def ellipse(self, box, fill: Colour | None = None, outline: Colour | None = None, width: int = 1) -> None:
        self.draw.ellipse(box, fill=fill, outline=outline, width=width)
        self.mask.ellipse(box, fill=255 if fill is not None else None, outline=255 if outline is not None else None,
                          width=width)

    def paste(self, pic: Image.Image, cov: Image.Image, xy: tuple[int, int]) -> None:
        self.colour.paste(pic, xy, cov)
        self.alpha.paste(255, xy, cov)

    def multiply(self, factor: np.ndarray) -> None:
        """Scale the colours by ``factor`` (H x W): a texture over what is drawn so far."""
        colour = np.asarray(self.colour, np.float32) * factor[..., None]
        self.colour = Image.fromarray(np.clip(colour, 0, 255).astype(np.uint8), "RGB")
        self.draw = ImageDraw.Draw(self.colour)


@functools.lru_cache(maxsize=32)
def _text_strip(size: int) -> Image.Image:
    """A long line of made-up words in one font size, rendered once and cropped per use:
    rendering text is the slowest part of a page, and the words need not differ."""
    words = np.random.default_rng(size).choice(list(string.ascii_lowercase), 240)
    cuts = np.cumsum(np.random.default_rng(size + 1).integers(2, 9, 48))
    text = " ".join("".join(words[a:b]) for a, b in zip(np.r_[0, cuts[:-1]], cuts))
    font = _font(size)
    box = font.getbbox(text)
    strip = Image.new("L", (box[2] + 2, int(size * 1.4)), 0)
    ImageDraw.Draw(strip).text((0, 0), text, font=font, fill=255)
    return strip


FONT_SIZES = (7, 9, 11, 14, 18, 24, 32, 44, 60)  # few sizes, so each worker renders few strips


def _text(pic: Image.Image, rng: np.random.Generator, xy: tuple[int, int], size: int, width: int, ink: Colour) -> None:
    strip = _text_strip(min(FONT_SIZES, key=lambda s: abs(s - size)))
    width = max(4, min(width, strip.width - 1))
    x = int(rng.integers(0, strip.width - width))
    pic.paste(ink, xy, strip.crop((x, 0, x + width, strip.height)))


def _picture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A printed photo, as on a magazine's cover: a sky-to-ground gradient and a
    few large soft shapes, in muted colours (noise in every colour looked like
    nothing on the photos' desks)."""
    palette = VIVID + [(120, 110, 90), (90, 120, 150), (200, 190, 170), (70, 100, 60)]
    colour = lambda: np.array(_c(rng, palette, 40), np.float32)  # noqa: E731
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    ramp = colour() * (1 - t) + colour() * t
    pic = Image.fromarray(np.repeat(ramp, w, axis=1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pic)
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tuple(int(v) for v in colour()))
    arr = np.asarray(pic.filter(ImageFilter.GaussianBlur(max(1.0, w / 60))), np.float32)
    # Then fine detail, as a photo has: speckle and small strokes. Without it, texture
    # was the bricks' alone, and a photo's busy background read as "brick".
    arr = arr + rng.uniform(8, 30) * rng.standard_normal((h, w, 1)).astype(np.float32)
    pic = Image.fromarray(np.clip(0.7 * arr + 0.3 * arr.mean(axis=2, keepdims=True), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pic)
    for _ in range(int(rng.integers(5, 30))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.01, 0.06) * w
        draw.line([(x, y), (x + rng.normal(0, r), y + rng.normal(0, r))], tuple(int(v) for v in colour()),
                  max(1, int(r * 0.3)))
    return pic


def _flat_item(rng: np.random.Generator, kind: str, w: int, h: int) -> Image.Image:
    """An axis-aligned flat thing (page, magazine, book, keyboard) as RGB."""
    if kind == "laptop":  # silver or white, its keys in the near half, sometimes stickers
        body = _c(rng, [(205, 205, 210), (235, 235, 232), (120, 120, 125)], 12)
        pic = Image.new("RGB", (w, h), body)
        d = ImageDraw.Draw(pic)
        key = max(3, int(w / rng.uniform(16, 22)))
        for y in range(int(h * 0.12), int(h * 0.55) - key, key):
            for x in range(int(w * 0.08), int(w * 0.92) - key, key):
                d.rectangle((x + 1, y + 1, x + key - 2, y + key - 2), fill=_shade(body, rng.uniform(0.25, 0.45)))
        d.rectangle((int(w * 0.33), int(h * 0.62), int(w * 0.67), int(h * 0.92)), outline=_shade(body, 0.85))
        for _ in range(int(rng.integers(0, 6))):
            sx, sy, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, rng.uniform(0.03, 0.08) * w
            d.rectangle((sx - r, sy - r * 0.6, sx + r, sy + r * 0.6), fill=_c(rng))
        return pic
    if kind == "keyboard":
        body = _c(rng, [(190, 190, 195), (60, 60, 65), (30, 30, 32)], 20)
        pic = Image.new("RGB", (w, h), body)
        d = ImageDraw.Draw(pic)
        key = max(4, int(w / rng.uniform(14, 20)))
        keyc = _shade(body, rng.uniform(0.3, 0.6)) if sum(body) > 300 else _shade(body, 0.5)
        for y in range(int(h * 0.3), h - key, key):
            for x in range(key // 2, w - key, key):
                d.rectangle((x + 1, y + 1, x + key - 2, y + key - 2), fill=keyc)
        return pic
    paper = (245, 245, 240) if kind == "page" else _c(rng)
    pic = Image.new("RGB", (w, h), _c(rng, [paper], 10))
    ink = (30, 30, 30) if sum(paper) > 450 else _c(rng, [(240, 240, 240), (20, 20, 20)], 10)
    y = int(h * rng.uniform(0.03, 0.1))
    if kind in ("magazine", "book"):
        size = int(max(8, w * rng.uniform(0.12, 0.22)))
        _text(pic, rng, (int(w * 0.06), y), size, int(w * rng.uniform(0.4, 0.9)), _c(rng, [ink, (240, 240, 240)], 20))
        y += int(size * 1.3)
        if rng.random() < 0.8:  # a picture on the cover
            ih = int(h * rng.uniform(0.4, 0.85))  # a magazine's cover is mostly its picture
            art = _picture(rng, w, ih)
            pic.paste(art, (0, min(h - ih, y + int(h * rng.uniform(0, 0.3)))))
    line_h = max(3, int(h * rng.uniform(0.02, 0.045)))
    size = max(6, int(line_h * 0.9))
    while y < h - line_h and rng.random() < 0.97:
        _text(pic, rng, (int(w * 0.06), y), size, int(w * rng.uniform(0.3, 0.9)), ink)
        y += int(line_h * rng.uniform(1.2, 2.0))
    return pic


def flat(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    kind = ["page", "magazine", "magazine", "magazine", "book", "keyboard", "laptop"][rng.integers(7)]
    ratio = {"keyboard": rng.uniform(0.3, 0.45), "laptop": rng.uniform(0.65, 0.75)}.get(kind, rng.uniform(1.2, 1.45))
    w = int(scale * rng.uniform(0.5, 0.9))
    h = int(w * ratio)
    pic = _flat_item(rng, kind, max(8, w), max(8, h))
    angle = rng.uniform(-40, 40)
    cov = Image.new("L", pic.size, 255).rotate(angle, Image.NEAREST, expand=True)
    pic = pic.rotate(angle, Image.NEAREST, expand=True)
    layer.paste(pic, cov, (int(cx - pic.width / 2), int(cy - pic.height / 2)))


def pen_pot(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    r = scale * rng.uniform(0.08, 0.14)
    body = _c(rng, [(25, 25, 28), (200, 200, 205), (40, 60, 140)], 15)
    for _ in range(int(rng.integers(6, 20))):
        a = rng.uniform(-2.4, -0.7)
        ln = r * rng.uniform(1.5, 3.0)
        x0 = cx + rng.uniform(-0.7, 0.7) * r
        layer.line([(x0, cy), (x0 + ln * np.cos(a), cy + ln * np.sin(a))], _c(rng), r * rng.uniform(0.12, 0.22))
    layer.polygon([(cx - r, cy), (cx + r, cy), (cx + r * 0.9, cy + 1.6 * r), (cx - r * 0.9, cy + 1.6 * r)], body)
    layer.ellipse((cx - r, cy - 0.35 * r, cx + r, cy + 0.35 * r), fill=_shade(body, 0.6))


def mug(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    r = scale * rng.uniform(0.07, 0.12)
    body = _c(rng, [(240, 240, 238), (240, 240, 238), (200, 50, 50), (50, 90, 170)], 10)
    layer.ellipse((cx + 0.6 * r, cy + 0.2 * r, cx + 1.6 * r, cy + 1.2 * r), outline=body, width=max(2, int(0.2 * r)))
    layer.polygon([(cx - r, cy), (cx + r, cy), (cx + r, cy + 1.3 * r), (cx - r, cy + 1.3 * r)], _shade(body, 0.92))
    layer.ellipse((cx - r, cy + 0.95 * r, cx + r, cy + 1.65 * r), fill=_shade(body, 0.92))
    layer.ellipse((cx - r, cy - 0.35 * r, cx + r, cy + 0.35 * r), fill=body)
    layer.ellipse((cx - 0.85 * r, cy - 0.27 * r, cx + 0.85 * r, cy + 0.27 * r), fill=_shade(body, 0.7))


def tape(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    r = scale * rng.uniform(0.06, 0.11)
    squash = rng.uniform(0.5, 1.0)
    colour = _c(rng, [(40, 80, 200), (230, 230, 225), (60, 60, 60), (220, 200, 60)], 15)
    layer.ellipse((cx - r, cy - r * squash, cx + r, cy + r * squash), outline=colour, width=max(3, int(r * 0.35)))


def scissors(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    r = scale * rng.uniform(0.03, 0.05)
    a = rng.uniform(0, 2 * np.pi)
    handle = _c(rng, [(240, 120, 30), (30, 30, 30), (40, 90, 200)], 15)
    tip = np.array([cx, cy]) + 5 * r * np.array([np.cos(a), np.sin(a)])
    for side in (-1, 1):
        b = a + np.pi + side * 0.5
        hc = np.array([cx, cy]) + 1.6 * r * np.array([np.cos(b), np.sin(b)])
        layer.line([(cx, cy), tuple(tip + side * r * 0.3)], (170, 170, 175), max(2, int(r * 0.5)))
        layer.ellipse((hc[0] - r, hc[1] - 0.7 * r, hc[0] + r, hc[1] + 0.7 * r), outline=handle, width=max(2, int(r * 0.45)))


def lamp(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    r = scale * rng.uniform(0.08, 0.14)
    colour = _c(rng, [(210, 30, 30), (230, 230, 230), (30, 30, 30), (40, 120, 200)], 15)
    a = rng.uniform(-0.6, 0.6)
    axis = np.array([np.sin(a), np.cos(a)])
    perp = np.array([axis[1], -axis[0]])
    c0 = np.array([cx, cy])
    pts = [c0 + perp * r * 0.25, c0 - perp * r * 0.25, c0 + axis * 1.4 * r - perp * r, c0 + axis * 1.4 * r + perp * r]
    layer.polygon([tuple(p) for p in pts], colour)
    e = c0 + axis * 1.4 * r
    layer.polygon(_ellipse(e[0], e[1], r, 0.4 * r, np.arctan2(perp[1], perp[0])), _shade(colour, 0.65))


def plant(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    r = scale * rng.uniform(0.15, 0.35)
    green = _c(rng, [(70, 140, 50), (100, 170, 60), (40, 100, 40)], 20)
    for _ in range(int(rng.integers(5, 14))):
        a = rng.uniform(0, 2 * np.pi)
        end = np.array([cx, cy]) + r * rng.uniform(0.5, 1.0) * np.array([np.cos(a), np.sin(a)])
        layer.line(_curve(rng, np.array([cx, cy]), end, r * 0.15, 12), _shade(green, rng.uniform(0.8, 1.2)),
                   r * rng.uniform(0.04, 0.08))
    pot = _c(rng, [(200, 110, 70), (230, 230, 230), (40, 90, 200)], 20)
    layer.ellipse((cx - 0.15 * r, cy - 0.1 * r, cx + 0.15 * r, cy + 0.1 * r), fill=pot)


def cable(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    h, w = layer.alpha.height, layer.alpha.width
    p0 = np.array([cx, cy])
    p3 = rng.uniform([0, 0], [w, h])
    colour = _c(rng, [(20, 20, 22), (20, 20, 22), (235, 235, 235), (120, 120, 120)], 10)
    layer.line(_curve(rng, p0, p3, 0.3 * scale), colour, rng.uniform(2, 5) * scale / 400)


def shapes(layer: Layer, rng: np.random.Generator, cx: float, cy: float, scale: float) -> None:
    """Plain geometric shapes and lines in any colour: the catch-all distractor."""
    r = scale * rng.uniform(0.03, 0.12)
    kind = rng.integers(4)
    colour = _c(rng)
    if kind == 0:
        n = int(rng.integers(3, 7))
        layer.polygon(_ellipse(cx, cy, r, r * rng.uniform(0.4, 1), rng.uniform(0, np.pi), n), colour)
    elif kind == 1:
        layer.ellipse((cx - r, cy - r * 0.6, cx + r, cy + r * 0.6), fill=colour)
    elif kind == 2:
        a = rng.uniform(0, np.pi)
        d = 2 * r * np.array([np.cos(a), np.sin(a)])
        layer.line([(cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])], colour, max(2, r * rng.uniform(0.05, 0.3)))
    else:
        layer.line(_curve(rng, np.array([cx, cy]), np.array([cx, cy]) + rng.normal(0, 2 * r, 2), r), colour,
                   max(2, r * 0.15))


ITEMS = {"flat": (flat, 2.5), "pen_pot": (pen_pot, 1.0), "mug": (mug, 0.8), "tape": (tape, 0.8),
         "scissors": (scissors, 0.7), "lamp": (lamp, 0.5), "plant": (plant, 0.8), "cable": (cable, 1.0),
         "shapes": (shapes, 0.8)}


def clutter(rng: np.random.Generator, w: int, h: int, busy: float) -> Layer:
    """Background things on the surface; ``busy`` in 0..1 sets how many."""
    layer = Layer(w, h)
    names = list(ITEMS)
    p = np.array([ITEMS[k][1] for k in names])
    scale = float(max(w, h))
    for _ in range(int(round(busy * rng.uniform(4, 14)))):
        item = ITEMS[names[int(rng.choice(len(names), p=p / p.sum()))]][0]
        item(layer, rng, rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h, scale)
    layer.multiply(_grain(rng, w, h))
    return layer


def _grain(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Grain and blotches in patches, for the clutter: real things are seldom flat colour,
    and while only the object had texture, a photo's textured clutter read as "brick"."""
    patchy = np.clip(smooth_noise(rng, w, h, 0.25 * w) + rng.uniform(-0.3, 0.5), 0, 1)
    amp = rng.uniform(0.03, 0.18) * patchy
    tex = 0.7 * rng.standard_normal((h, w), dtype=np.float32) + 0.5 * fractal_noise(rng, w, h, rng.uniform(2, 8))
    return 1 + amp * tex


def occluders(rng: np.random.Generator, w: int, h: int, box: tuple[float, float, float, float]) -> Layer:
    """Something across part of the object's screen box: fingers, a leaf, a cable or a pen."""
    layer = Layer(w, h)
    x0, y0, x1, y1 = box
    size = max(x1 - x0, y1 - y0)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    a = rng.uniform(0, 2 * np.pi)
    edge = centre + 0.5 * size * np.array([np.cos(a), np.sin(a)])
    kind = rng.integers(4)
    if kind == 0:  # fingers reaching over the edge from outside
        skin = _c(rng, SKIN, 12)
        out = edge + 0.6 * size * np.array([np.cos(a), np.sin(a)])
        layer.ellipse((out[0] - 0.45 * size, out[1] - 0.45 * size, out[0] + 0.45 * size, out[1] + 0.45 * size), fill=skin)
        side = np.array([-np.sin(a), np.cos(a)])
        for k in range(int(rng.integers(1, 4))):
            base = out + side * size * 0.18 * (k - 1)
            tip = edge + side * size * 0.15 * (k - 1) - 0.1 * size * np.array([np.cos(a), np.sin(a)])
            layer.line([tuple(base), tuple(tip)], _shade(skin, rng.uniform(0.9, 1.05)), size * rng.uniform(0.1, 0.15))
    elif kind == 1:  # a leaf
        green = _c(rng, [(70, 140, 50), (100, 170, 60)], 20)
        start = edge + 0.8 * size * np.array([np.cos(a), np.sin(a)])
        layer.line(_curve(rng, start, centre + rng.normal(0, 0.2 * size, 2), 0.1 * size, 12), green,
                   size * rng.uniform(0.05, 0.1))
    else:  # a cable or a pen lying across
        colour = _c(rng, [(20, 20, 22), (235, 235, 235)] if kind == 2 else VIVID, 10)
        b = a + np.pi / 2 + rng.uniform(-0.5, 0.5)
        d = size * np.array([np.cos(b), np.sin(b)])
        mid = edge + (centre - edge) * rng.uniform(0.0, 0.4)
        pts = _curve(rng, mid - d, mid + d, 0.1 * size) if kind == 2 else [tuple(mid - d * 0.5), tuple(mid + d * 0.5)]
        layer.line(pts, colour, max(2, size * rng.uniform(0.03, 0.08)))
    return layer


def hand(rng: np.random.Generator, w: int, h: int, box: tuple[float, float, float, float]) -> tuple[Layer, Layer]:
    """A hand holding the object up: the palm and arm behind it, and the fingers and thumb
    over its lower edge (two layers: drawn before the object and after it)."""
    behind, front = Layer(w, h), Layer(w, h)
    x0, y0, x1, y1 = box
    size = max(x1 - x0, y1 - y0)
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    a = np.pi / 2 + rng.uniform(-0.9, 0.9)  # the arm comes from below
    down = np.array([np.cos(a), np.sin(a)])
    side = np.array([-down[1], down[0]])
    skin = _shade(_c(rng, SKIN, 12), rng.uniform(0.55, 0.95))  # often against the light
    palm = c + 0.5 * size * down
    behind.ellipse((palm[0] - 0.6 * size, palm[1] - 0.5 * size, palm[0] + 0.6 * size, palm[1] + 0.5 * size), fill=skin)
    behind.line([tuple(palm), tuple(palm + 3 * max(w, h) * down)], skin, 0.8 * size)
    width = size * rng.uniform(0.11, 0.15)
    for k in np.linspace(-1, 1, int(rng.integers(3, 5))):  # side by side, curled up over the lower edge
        base = c + down * 0.62 * size + side * k * 0.3 * size
        tip = c + down * rng.uniform(0.1, 0.3) * size + side * k * 0.33 * size
        front.line([tuple(base), tuple(tip)], _shade(skin, rng.uniform(1.0, 1.15)), width)
    s = rng.choice([-1.0, 1.0])  # the thumb, up one side
    thumb = _curve(rng, palm + s * 0.35 * size * side, c + s * 0.5 * size * side - 0.1 * size * down, 0.05 * size, 8)
    front.line(thumb, _shade(skin, 0.95), size * 0.13)
    return behind, front
