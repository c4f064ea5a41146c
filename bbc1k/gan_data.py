"""Image tensors for the GAN lesson: small digits and small bbc pictures.

Only loading and resizing lives here; the networks, losses and training loops
stay in ``04-generative-adversarial-networks.ipynb``. Every loader returns a
float32 tensor ``[N, C, H, W]`` with values in ``[0, 1]``; the lesson rescales
it as each model needs. torch (and scikit-learn, torchvision for the optional
sources) are imported inside the functions, so bbc1k imports without them.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from bbc1k import layout
from bbc1k.layout import IMAGE_SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    import torch

DIGITS_SOURCES = ("sklearn", "mnist")
CROP_MODES = ("object", "whole")


def load_digits(size: int = 32, source: str = "sklearn", root: str | Path = "data") -> "torch.Tensor":
    """Hand-written digits as ``[N, 1, size, size]`` in ``[0, 1]``.

    ``"sklearn"``: the 1,797 8x8 digits bundled with scikit-learn (no download),
    upsampled. ``"mnist"``: the 70,000 MNIST digits through torchvision, downloaded
    into ``root``; if that fails (offline, no torchvision) the bundled digits are
    used instead, with a warning that says why.
    """
    if source not in DIGITS_SOURCES:
        raise ValueError(f"digits source {source!r} is not one of {DIGITS_SOURCES}")
    if source == "mnist":
        try:
            return _mnist_digits(size, Path(root))
        except Exception as err:  # offline, blocked or missing torchvision: the lesson still runs
            warnings.warn(f"MNIST could not be loaded ({type(err).__name__}: {err}); "
                          "using scikit-learn's bundled 8x8 digits instead", stacklevel=2)
    return _sklearn_digits(size)


def _sklearn_digits(size: int) -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("the bundled digits come with scikit-learn: pip install scikit-learn") from None
    pixels = sk_load_digits().images.astype(np.float32) / 16.0  # 8x8, values 0..16
    small = torch.from_numpy(pixels).unsqueeze(1)
    # Bilinear upsampling turns the 8x8 blocks into soft strokes rather than big squares.
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)


def _mnist_digits(size: int, root: Path) -> "torch.Tensor":
    import torch
    import torch.nn.functional as F
    from torchvision.datasets import MNIST

    parts = [MNIST(str(root), train=train, download=True).data for train in (True, False)]
    pixels = torch.cat(parts).float().div_(255).unsqueeze(1)  # 28x28
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)


def load_bbc_images(dataset: str | Path, size: int = 64, crop: str = "object",
                    limit: int | None = None, margin: float = 1.5) -> "torch.Tensor":
    """The pictures of a ``bbc_train`` folder as ``[N, 3, size, size]`` in ``[0, 1]``.

    ``crop="object"`` cuts a square around each object's box (``margin`` times its
    longer side, kept inside the picture) so the object fills the small image;
    pictures without a box in ``bboxes.json`` are centre-cropped. ``crop="whole"``
    centre-crops every picture to a square. ``limit`` keeps the first pictures in
    name order.
    """
    import torch

    if crop not in CROP_MODES:
        raise ValueError(f"crop {crop!r} is not one of {CROP_MODES}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    folder = Path(dataset) / layout.IMAGES_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; expected a bbc_train folder with {layout.IMAGES_DIR}/")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no pictures ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    boxes = _boxes_or_none(Path(dataset)) if crop == "object" else {}
    arrays = []
    for path in files:
        with Image.open(path) as im:
            im = im.convert("RGB")
            box = boxes.get(path.name)
            square = _square_around(box[1], im.size, margin) if box else _centre_square(im.size)
            arrays.append(np.asarray(im.resize((size, size), Image.BILINEAR, box=square, reducing_gap=2.0)))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)


def _boxes_or_none(dataset: Path) -> dict[str, tuple[str, list[float]]]:
    if not (dataset / layout.BBOXES_JSON).is_file():
        warnings.warn(f"{dataset / layout.BBOXES_JSON} is missing; centre-cropping whole pictures", stacklevel=3)
        return {}
    return layout.read_boxes(dataset)


def _centre_square(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    w, h = image_size
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    return (x0, y0, x0 + side, y0 + side)


def _square_around(bbox: list[float], image_size: tuple[int, int],
                   margin: float) -> tuple[float, float, float, float]:
    """A square of ``margin`` times the box's longer side, centred on the box and
    shifted (never cut) to lie inside the picture."""
    w, h = image_size
    x, y, bw, bh = bbox
    side = min(max(bw, bh) * margin, w, h)
    side = max(side, 1.0)
    cx, cy = x + bw / 2, y + bh / 2
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - side / 2, 0.0), h - side)
    return (x0, y0, x0 + side, y0 + side)
