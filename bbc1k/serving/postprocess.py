"""A model's outputs read in image pixels: class probabilities, the box,
the mask (as a palette PNG)."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from bbc1k.serving.preprocess import Fit

# Mask colours (RGBA) by mask value: background transparent, then brick, ball, cylinder.
MASK_COLOURS: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 0, 0), (230, 85, 13, 255), (49, 130, 189, 255), (49, 163, 84, 255),
    (117, 107, 177, 255), (222, 45, 38, 255), (99, 99, 99, 255), (188, 189, 34, 255),
)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, computed in float64 without overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def probabilities(logits: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Class name -> probability, in the model's class order."""
    return {c: float(p) for c, p in zip(classes, softmax(logits))}


def box_to_image(box: np.ndarray, fit: Fit, scale: tuple[float, float] = (1.0, 1.0),
                 box_range: tuple[float, float] = (-1.0, 1.0)) -> list[float]:
    """A model box ``xyxy`` in ``box_range`` to ``[x0, y0, x1, y1]`` pixels of
    the image (times ``scale``, e.g. :attr:`Decoded.scale`), clipped to it."""
    lo, hi = box_range
    in_w, in_h = fit.input_size
    b = (np.asarray(box, dtype=np.float64) - lo) / (hi - lo)
    x0, y0 = fit.to_image(min(b[0], b[2]) * in_w, min(b[1], b[3]) * in_h)
    x1, y1 = fit.to_image(max(b[0], b[2]) * in_w, max(b[1], b[3]) * in_h)
    w, h = fit.image_size
    x0, x1 = (float(np.clip(v, 0, w)) * scale[0] for v in (x0, x1))
    y0, y1 = (float(np.clip(v, 0, h)) * scale[1] for v in (y0, y1))
    return [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)]


def mask_to_image(mask_logits: np.ndarray, fit: Fit) -> Image.Image:
    """Per-pixel class scores ``[C, h, w]`` (covering the model input) to a
    mode "P" mask of the decoded image's size: pixel value = class index,
    palette from :data:`MASK_COLOURS` with the background transparent."""
    labels = np.asarray(mask_logits).argmax(axis=0).astype(np.uint8)
    mh, mw = labels.shape
    in_w, in_h = fit.input_size
    w, h = fit.image_size
    # Image pixel x lies at model input u = (x - ox) / sx, i.e. at mask column u * mw / in_w.
    left = (0 - fit.ox) / fit.sx * mw / in_w
    right = (w - fit.ox) / fit.sx * mw / in_w
    top = (0 - fit.oy) / fit.sy * mh / in_h
    bottom = (h - fit.oy) / fit.sy * mh / in_h
    small = Image.fromarray(labels, "L")
    full = small.transform((w, h), Image.Transform.EXTENT, (left, top, right, bottom),
                           resample=Image.Resampling.NEAREST, fillcolor=0)
    return _with_palette(full)


def _with_palette(labels: Image.Image) -> Image.Image:
    """The same class indices as a palette image: colours from MASK_COLOURS, index 0 transparent."""
    palette = []
    for i in range(256):
        palette.extend(MASK_COLOURS[i][:3] if i < len(MASK_COLOURS) else (0, 0, 0))
    out = Image.frombytes("P", labels.size, labels.tobytes())
    out.putpalette(palette)
    out.info["transparency"] = 0
    return out


def png_base64(im: Image.Image) -> str:
    """``im`` as a base64 PNG (a palette image keeps its transparent index)."""
    buf = io.BytesIO()
    extra = {"transparency": im.info["transparency"]} if "transparency" in im.info else {}
    im.save(buf, format="PNG", **extra)
    return base64.b64encode(buf.getvalue()).decode("ascii")
