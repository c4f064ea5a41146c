"""Uploaded bytes to an RGB image, safely.

:func:`decode_image` refuses what is not an image (:class:`NotAnImage`),
images too large to decode (:class:`ImageTooLarge`) and broken files
(:class:`BadImage`); it applies the EXIF rotation, takes the first frame of an
animation, handles every Pillow mode and shrinks huge photos while decoding.
The errors say what is wrong in words for the user; which HTTP status each
means is the web app's decision (app/errors.py), not this module's.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

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


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited over white."""
    if im.mode == "RGB":
        return im
    if im.mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(im, dtype=np.float64)
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
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
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
        turned = _orientation(im) in (5, 6, 7, 8)  # a quarter turn swaps width and height
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a corrupt EXIF block: keep the pixels as stored
            turned = False
        width, height = (h, w) if turned else (w, h)
        rgb = _to_rgb(im)
        if max(rgb.size) > work_side:
            rgb.thumbnail((work_side, work_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"the image is too large to decode ({e})") from None
    except MemoryError:
        raise ImageTooLarge("the image is too large to decode in the memory available") from None
    except Exception as e:  # truncated or corrupt data: Pillow raises many kinds
        raise BadImage(f"the image is damaged or truncated ({type(e).__name__}: {e})") from None
    return Decoded(image=rgb, width=width, height=height, format=fmt)
