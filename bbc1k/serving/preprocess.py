"""A decoded image to a model's input, remembering the geometry.

:func:`prepare` fits an image to a model's input (``squish``, ``crop`` or
``pad``, as the model's :class:`~bbc1k.modelmeta.ModelMeta` says) and returns
the :class:`Fit` that maps answers back to image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bbc1k.modelmeta import ModelMeta


@dataclass(frozen=True)
class Fit:
    """Where the model input lies on the (decoded) image: model input pixel
    ``(u, v)`` is image pixel ``(u * sx + ox, v * sy + oy)``."""

    sx: float
    sy: float
    ox: float
    oy: float
    image_size: tuple[int, int]  # (w, h) of the decoded image
    input_size: tuple[int, int]  # (w, h) of the model input

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        return u * self.sx + self.ox, v * self.sy + self.oy


def fit_image(im: Image.Image, meta: ModelMeta, *,
              resample: Image.Resampling = Image.Resampling.BILINEAR) -> tuple[Image.Image, Fit]:
    """Fit ``im`` to ``meta.input_size`` by ``meta.resize`` (as fastai's
    Resize does at validation: squish, centre crop, or centred black padding).
    ``resample``: NEAREST fits a mask of class indices the same way."""
    in_h, in_w = (int(v) for v in meta.input_size)
    w, h = im.size
    if meta.resize == "squish":
        return im.resize((in_w, in_h), resample), Fit(w / in_w, h / in_h, 0.0, 0.0, (w, h), (in_w, in_h))
    if meta.resize == "crop":
        s = max(in_w / w, in_h / h)
        cw, ch = in_w / s, in_h / s
        x0, y0 = (w - cw) / 2, (h - ch) / 2
        out = im.resize((in_w, in_h), resample, box=(x0, y0, x0 + cw, y0 + ch))
        return out, Fit(cw / in_w, ch / in_h, x0, y0, (w, h), (in_w, in_h))
    # pad: scale the long side to fit, centre on black
    s = min(in_w / w, in_h / h)
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    px, py = (in_w - sw) // 2, (in_h - sh) // 2
    canvas = Image.new(im.mode, (in_w, in_h))
    canvas.paste(im.resize((sw, sh), resample), (px, py))
    return canvas, Fit(w / sw, h / sh, -px * w / sw, -py * h / sh, (w, h), (in_w, in_h))


def to_tensor(im: Image.Image, meta: ModelMeta) -> np.ndarray:
    """A fitted RGB image as the model's float32 CHW input (0..1, then normalised)."""
    x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(meta.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(meta.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def prepare(im: Image.Image, meta: ModelMeta) -> tuple[np.ndarray, Fit]:
    """``(CHW float32 input, Fit)`` for one decoded RGB image."""
    fitted, fit = fit_image(im, meta)
    return to_tensor(fitted, meta), fit
