"""Run exported bbc1k models on photos: decode, prepare, predict, interpret.

One place for the image handling that the web app, the tests and the
benchmarks share, with numpy and Pillow only (ONNX Runtime is imported by
:func:`open_session`, which can keep the optimised graphs in a cache). The steps:

- :func:`decode_image` turns uploaded bytes into an RGB image, safely: it
  refuses what is not an image (:class:`NotAnImage`), images too large to
  decode (:class:`ImageTooLarge`) and broken files (:class:`BadImage`); it
  applies the EXIF rotation, takes the first frame of an animation, handles
  every Pillow mode and shrinks huge photos while decoding.
- :func:`prepare` fits a decoded image to a model's input (``squish``,
  ``crop`` or ``pad``, as the model's :class:`~bbc1k.modelmeta.ModelMeta`
  says) and remembers the geometry (:class:`Fit`) to map answers back.
- :func:`probabilities`, :func:`box_to_image` and :func:`mask_to_image` read
  the model's outputs in image pixels.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from bbc1k.modelmeta import ModelMeta

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
"""Images with more pixels (after any JPEG shrink-on-load) are refused: a 50 MP
RGB image takes 150 MB to decode."""
DEFAULT_WORK_SIDE = 1024
"""Decoded images are shrunk so their long side is at most this; models take
far smaller inputs and masks are returned at this size at most."""
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""Image formats accepted from uploads (checked by content, never by name)."""

# Mask colours (RGBA) by mask value: background transparent, then brick, ball, cylinder.
MASK_COLOURS: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 0, 0), (230, 85, 13, 255), (49, 130, 189, 255), (49, 163, 84, 255),
    (117, 107, 177, 255), (222, 45, 38, 255), (99, 99, 99, 255), (188, 189, 34, 255),
)


class ImageError(ValueError):
    """An upload that cannot be used. ``status`` is the HTTP status it maps to."""

    status = 422


class NotAnImage(ImageError):
    status = 415


class ImageTooLarge(ImageError):
    status = 413


class BadImage(ImageError):
    status = 422


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


def fit_image(im: Image.Image, meta: ModelMeta) -> tuple[Image.Image, Fit]:
    """Fit ``im`` to ``meta.input_size`` by ``meta.resize`` (as fastai's
    Resize does at validation: squish, centre crop, or centred black padding)."""
    in_h, in_w = (int(v) for v in meta.input_size)
    w, h = im.size
    bilinear = Image.Resampling.BILINEAR
    if meta.resize == "squish":
        return im.resize((in_w, in_h), bilinear), Fit(w / in_w, h / in_h, 0.0, 0.0, (w, h), (in_w, in_h))
    if meta.resize == "crop":
        s = max(in_w / w, in_h / h)
        cw, ch = in_w / s, in_h / s
        x0, y0 = (w - cw) / 2, (h - ch) / 2
        out = im.resize((in_w, in_h), bilinear, box=(x0, y0, x0 + cw, y0 + ch))
        return out, Fit(cw / in_w, ch / in_h, x0, y0, (w, h), (in_w, in_h))
    # pad: scale the long side to fit, centre on black
    s = min(in_w / w, in_h / h)
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    px, py = (in_w - sw) // 2, (in_h - sh) // 2
    canvas = Image.new("RGB", (in_w, in_h))
    canvas.paste(im.resize((sw, sh), bilinear), (px, py))
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


def softmax(logits: np.ndarray) -> np.ndarray:
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


def cpu_count() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", _cgroup2_quota), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None)):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if parse is not None:
            quota = parse(text)
        else:
            try:
                q = int(text)
                period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
                quota = q / period if q > 0 and period > 0 else None
            except (OSError, ValueError):
                quota = None
        if quota:
            n = min(n, max(1, int(quota + 0.5)))
            break
    return max(1, n)


def _cgroup2_quota(text: str) -> float | None:
    parts = text.split()
    if len(parts) == 2 and parts[0] != "max":
        try:
            return int(parts[0]) / int(parts[1])
        except (ValueError, ZeroDivisionError):
            return None
    return None


def _session_options(ort: Any, threads: int | None) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or cpu_count()
    opts.inter_op_num_threads = 1
    # Bounded memory over peak speed: without the arena and the memory pattern,
    # a large batch's activations are returned after the run instead of kept
    # (three resnet34-size models with batches of 8: peak 1.1 GB instead of 2.1 GB,
    # at the same speed on 2 CPUs).
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    # Idle worker threads sleep instead of spinning: the CPUs are shared with
    # the request decoding threads (and, on small hosts, with other services).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _cpu_signature() -> str:
    """What a graph optimised for this CPU depends on: its architecture and
    instruction set extensions (ORT's NCHWc layout follows the vector width)."""
    import platform

    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # e.g. its folder is a file: nothing was written there
        pass


def optimized_graph_path(path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Where :func:`open_session` keeps the optimised graph of the model at
    ``path``: named by the model's SHA-256, the ONNX Runtime version and the CPU."""
    import onnxruntime as ort

    key = hashlib.sha256(f"{_model_sha256(path, Path(cache_dir))}|{ort.__version__}|{_cpu_signature()}"
                         .encode()).hexdigest()
    return Path(cache_dir) / f"ort-optimized-{key[:40]}.onnx"


def _model_sha256(path: str | os.PathLike, cache_dir: Path) -> str:
    """The SHA-256 of the model file, remembered in ``cache_dir`` by its path,
    size, modification time and inode: hashing 300 MB of models would take
    most of the time the cache saves."""
    from bbc1k.download import sha256_of

    st = os.stat(path)
    stamp = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo = cache_dir / f"sha256-of-{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.txt"
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = sha256_of(path)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:  # an unwritable cache: hash again next time
        _remove(tmp)
    return digest


def open_session(path: str | os.PathLike, *, threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Any:
    """An ONNX Runtime session with full graph optimisation, ``threads``
    intra-op threads (default: :func:`cpu_count`) and the GPU when ONNX
    Runtime has one.

    With ``cache_dir`` (CPU only), the optimised graph is saved there on the
    first load and loaded as it is on later ones: graph optimisation is most
    of a float32 model's load time, and the parsed-then-rewritten original
    leaves a freed heap as large as the weights behind. A cached graph that
    cannot be loaded is deleted and the model loaded from ``path``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if cache_dir is None or providers != ["CPUExecutionProvider"]:
        # GPU graphs hold provider-specific nodes that are not to be saved.
        return ort.InferenceSession(str(path), sess_options=_session_options(ort, threads), providers=providers)
    cached = optimized_graph_path(path, cache_dir)
    if cached.is_file():
        opts = _session_options(ort, threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done before saving
        try:
            return ort.InferenceSession(str(cached), sess_options=opts, providers=providers)
        except Exception as e:  # damaged, or from an incompatible build: make it again
            log.warning("cached optimised graph %s cannot be loaded (%s: %s); rebuilding it",
                        cached, type(e).__name__, str(e)[:200])
            _remove(cached)
    opts = _session_options(ort, threads)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    opts.optimized_model_filepath = str(tmp)
    # ORT warns that an NCHWc graph is hardware specific: the cache key holds the CPU's flags.
    opts.log_severity_level = 3
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:
        _remove(tmp)
        # Without saving; a model that cannot be loaded at all raises its own error here.
        session = ort.InferenceSession(str(path), sess_options=_session_options(ort, threads), providers=providers)
        log.warning("cannot cache the optimised graph of %s in %s (%s: %s)", path, cached.parent,
                    type(e).__name__, str(e)[:200])
        return session
    try:
        os.replace(tmp, cached)  # atomic: a concurrent start sees the whole file or none
    except OSError as e:  # an unwritable cache only costs the speed-up
        log.warning("cannot cache the optimised graph of %s (%s)", path, e)
        _remove(tmp)
    return session
