"""Pictures for the lessons: sample grids, boxes over images, masks blended over
images with a legend. matplotlib (and torch, when given tensors) are imported
inside the functions.

Images may be PIL images, HxWx3 arrays (uint8, or floats in 0..1) or CxHxW
tensors (floats in 0..1, or 0..255 integers as fastai decodes them).
Boxes are ``x0, y0, x1, y1`` in fastai's scaled coordinates: -1 is the
left / top edge of the image, +1 the right / bottom edge.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bbc1k.layout import MASK_CLASSES

MASK_COLORS: dict[str, tuple[float, float, float]] = {
    "brick": (0.90, 0.10, 0.10),
    "ball": (0.10, 0.80, 0.10),
    "cylinder": (0.15, 0.35, 1.00),
}
"""Overlay colour of each object class (background is left uncoloured)."""

TRUE_COLOR = (0.1, 0.9, 0.1)
PRED_COLOR = (1.0, 0.2, 0.2)


def to_image(x: Any) -> np.ndarray:
    """An HxWx3 float array in 0..1 from a PIL image, an array or a tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected an image of shape HxWx3 or 3xHxW, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if np.issubdtype(arr.dtype, np.integer) or arr.max(initial=0) > 1.0:
        arr = arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def to_mask(m: Any) -> np.ndarray:
    """An HxW integer array of mask values from an array, tensor or PIL image."""
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    arr = np.asarray(m)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a mask of shape HxW, got shape {arr.shape}")
    return arr.astype(np.int64)


def box_to_pixels(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Scaled ``x0, y0, x1, y1`` in [-1, 1] to pixel corners of a ``width`` x ``height`` image."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    return ((x0 + 1) / 2 * width, (y0 + 1) / 2 * height, (x1 + 1) / 2 * width, (y1 + 1) / 2 * height)


def _grid(n: int, ncols: int, size: float):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, list(axes.flat)


def show_grid(images: Sequence[Any], titles: Sequence[str] | None = None, *, ncols: int = 4, size: float = 3.0):
    """A grid of images with optional titles; returns the figure."""
    fig, axes = _grid(len(images), ncols, size)
    for i, (ax, im) in enumerate(zip(axes, images)):
        ax.imshow(to_image(im))
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    fig.tight_layout()
    return fig


def draw_box(ax: Any, box: Sequence[float], width: int, height: int, *, color=PRED_COLOR,
             label: str | None = None, linestyle: str = "-") -> None:
    """Draw one scaled box on a matplotlib axis showing a ``width`` x ``height`` image."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box_to_pixels(box, width, height)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2,
                           linestyle=linestyle, label=label))


def show_boxes(images: Sequence[Any], *, true: Sequence[Any] | None = None, pred: Sequence[Any] | None = None,
               titles: Sequence[str] | None = None, ncols: int = 4, size: float = 3.0):
    """Images with their true boxes (green, dashed) and predicted boxes (red);
    returns the figure."""
    from matplotlib.lines import Line2D

    fig, axes = _grid(len(images), ncols, size)
    for i, (ax, im) in enumerate(zip(axes, images)):
        img = to_image(im)
        h, w = img.shape[:2]
        ax.imshow(img)
        if true is not None:
            draw_box(ax, true[i], w, h, color=TRUE_COLOR, linestyle="--")
        if pred is not None:
            draw_box(ax, pred[i], w, h, color=PRED_COLOR)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    handles = []
    if true is not None:
        handles.append(Line2D([], [], color=TRUE_COLOR, linestyle="--", linewidth=2, label="true box"))
    if pred is not None:
        handles.append(Line2D([], [], color=PRED_COLOR, linewidth=2, label="predicted box"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    return fig


def mask_overlay(image: Any, mask: Any, classes: Sequence[str] = MASK_CLASSES, *, alpha: float = 0.5,
                 colors: Mapping[str, tuple[float, float, float]] = MASK_COLORS) -> np.ndarray:
    """``image`` with each class's pixels of ``mask`` blended in its colour
    (``classes[0]``, the background, stays as it is). Returns HxWx3 floats in 0..1."""
    img = to_image(image)
    m = to_mask(mask)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {m.shape} differs from image shape {img.shape[:2]}")
    out = img.copy()
    for value, name in enumerate(classes):
        if value == 0 or name not in colors:
            continue
        sel = m == value
        out[sel] = (1 - alpha) * img[sel] + alpha * np.asarray(colors[name], dtype=np.float32)
    return out


def show_masks(images: Sequence[Any], masks: Sequence[Any], classes: Sequence[str] = MASK_CLASSES, *,
               titles: Sequence[str] | None = None, ncols: int = 4, size: float = 3.0, alpha: float = 0.5,
               colors: Mapping[str, tuple[float, float, float]] = MASK_COLORS):
    """Masks blended over their images, with a colour legend; returns the figure."""
    from matplotlib.patches import Patch

    fig, axes = _grid(len(images), ncols, size)
    for i, (ax, im, m) in enumerate(zip(axes, images, masks)):
        ax.imshow(mask_overlay(im, m, classes, alpha=alpha, colors=colors))
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    handles = [Patch(color=colors[c], label=c) for c in classes[1:] if c in colors]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
