"""Uploaded bytes to an RGB image, safely.

:func:`decode_image` refuses what is not an image (:class:`NotAnImage`),
images too large to decode (:class:`ImageTooLarge`) and broken files
(:class:`BadImage`); it applies the EXIF rotation, takes the first frame of an
animation, handles every Pillow mode and shrinks huge photos while decoding.
The errors say what is wrong in words for the user; which HTTP status each
means is the web app's decision (app/errors.py), not this module's.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 50_000_000
"""Images with more pixels (after any JPEG shrink-on-load) are refused: a 50 MP
RGB image takes 150 MB to decode."""
DEFAULT_WORK_SIDE = 1024
"""Decoded images are shrunk so their long side is at most this; models take
far smaller inputs and masks are returned at this size at most."""
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""Image formats accepted from uploads (checked by content, never by name)."""


class ImageError(ValueError):
    """An upload that cannot be used; the message says why, for the user."""


class NotAnImage(ImageError):
    """The bytes are not an image in one of :data:`ACCEPTED_FORMATS`."""


class ImageTooLarge(ImageError):
    """The image has more pixels than may be decoded."""


class BadImage(ImageError):
    """An image that is empty, damaged or truncated."""


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: ``image`` (RGB, long side <= the work side) and the
    size of the upload after EXIF rotation, in which answers are given."""

    image: Image.Image
    width: int
    height: int
    format: str

    @property
    def scale(self) -> tuple[float, float]:
        """Factors from ``image`` pixels to upload pixels (x, y)."""
        return self.width / self.image.width, self.height / self.image.height


# A 16-bit or float image is brought to 0..255 by these modes' value ranges.
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Modes Pillow cannot resample smoothly (it falls back to nearest neighbour) or at all:
# converted first, at 1 to 4 bytes a pixel.
_CONVERT_BEFORE_SHRINK = {"1": "L", "P": None, "PA": "RGBA"}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
"""EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose)."""
_STRIP_BYTES = 4 << 20


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


@functools.cache
def _reducible(mode: str) -> bool:
    """Whether Pillow's box reduction takes this mode (I;16, for one, it does not)."""
    try:
        Image.new(mode, (2, 2)).reduce(2)
        return True
    except ValueError:
        return False


def _shrink(im: Image.Image, work_side: int) -> Image.Image:
    """``im`` with its long side at most ``work_side``, in a mode that
    resamples well. A big picture is box-reduced strip by strip, so besides its
    decoded pixels (1 to 4 bytes each) only a strip and the small result are
    held: no full-size copy in a wider mode, no premultiplied copy."""
    mode = _CONVERT_BEFORE_SHRINK.get(im.mode, im.mode) or ("RGBA" if _has_alpha(im) else "RGB")
    w, h = im.size
    k = max(w, h) // work_side  # leaves the long side at work_side or more
    if k >= 2 and _reducible(mode):
        rows = max(1, _STRIP_BYTES // (4 * w * k)) * k
        out = Image.new(mode, (-(-w // k), -(-h // k)))
        for y in range(0, h, rows):
            strip = im.crop((0, y, w, min(h, y + rows)))
            out.paste((strip if strip.mode == mode else strip.convert(mode)).reduce(k), (0, y // k))
        im = out
    elif im.mode != mode:
        im = im.convert(mode)
    w, h = im.size
    if max(w, h) > work_side:
        s = work_side / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    return im


def _to_rgb(im: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """Any Pillow mode to RGB (a small image: this works in float32 on the
    whole picture); transparency is composited over white. ``value_range``:
    the extrema of a high-depth image measured before it was shrunk."""
    if im.mode == "RGB":
        return im
    if im.mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(im, dtype=np.float32)
        if value_range is not None and all(np.isfinite(value_range)):
            lo, hi = (float(v) for v in value_range)
        else:
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0  # float images in 0..1 keep their brightness
        elif im.mode != "F" and lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0  # stored as 16-bit but holding 8-bit values
        elif im.mode != "F" and lo >= 0 and hi <= 65535:
            lo, hi = 0.0, 65535.0
        arr = np.nan_to_num((arr - lo) / max(hi - lo, 1e-12), nan=0.0, posinf=1.0, neginf=0.0)
        return Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored); a broken EXIF block reads as 1."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 work_side: int = DEFAULT_WORK_SIDE) -> Decoded:
    """Decode an uploaded image safely. Raises :class:`NotAnImage`,
    :class:`ImageTooLarge` or :class:`BadImage` with a message for the user."""
    if not data:
        raise BadImage("the file is empty")
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"the image is too large to decode ({e})") from None
    except Image.UnidentifiedImageError:
        raise NotAnImage("the file is not an image (accepted: JPEG, PNG, GIF, WebP, BMP, TIFF)") from None
    except Exception as e:  # a broken header reads as a broken image, never a server error
        raise BadImage(f"the image cannot be read ({type(e).__name__}: {e})") from None
    fmt = im.format or "unknown"
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise BadImage(f"the image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise ImageTooLarge(f"the image is too large: {w}x{h} pixels; at most {max_pixels:,} pixels are accepted")
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animations: the first frame
        if fmt == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: fast and small.
            im.draft("RGB", (work_side, work_side))
        im.load()  # before reading EXIF: PNG's getexif() loads, and would swallow a broken stream
        orientation = _orientation(im)
        turned = orientation in (5, 6, 7, 8)  # a quarter turn swaps width and height
        width, height = (h, w) if turned else (w, h)
        value_range = im.getextrema() if im.mode in _HIGH_DEPTH_MODES else None
        # Shrink first, convert after: memory stays that of the decoded pixels
        # (1 to 4 bytes each), whatever the mode.
        small = _shrink(im, work_side)
        del im
        if orientation in _TRANSPOSE:
            small = small.transpose(_TRANSPOSE[orientation])
        rgb = _to_rgb(small, value_range)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"the image is too large to decode ({e})") from None
    except MemoryError:
        raise ImageTooLarge("the image is too large to decode in the memory available") from None
    except Exception as e:  # truncated or corrupt data: Pillow raises many kinds
        raise BadImage(f"the image is damaged or truncated ({type(e).__name__}: {e})") from None
    return Decoded(image=rgb, width=width, height=height, format=fmt)
