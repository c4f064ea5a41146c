"""int8 copies of exported models, with ONNX Runtime's quantisation tools.

Static quantisation (QDQ, per-channel int8 weights in 7 bits, uint8 activations): the
activation ranges are calibrated on images prepared exactly as the app
prepares requests (:mod:`bbc1k.serving`): training photos when the caller has
them, else synthetic bbc1k photos. :func:`write_int8_copy` writes
``X.int8.onnx`` beside ``X.onnx`` only when the copy scores within
``tolerance`` of the float32 model on the validation set, and records both
scores in the copy's description (``extra["int8"]``), with the SHA-256 of the
model it was made from: the app serves the copy in its place (app/models.py).

Torch-free; ``onnx`` (needed by ONNX Runtime's tools) is imported only when
quantising, so the slim serving image imports this module too.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bbc1k.download import sha256_of
from bbc1k.layout import tight_box
from bbc1k.modelmeta import META_KEY, ModelMeta, read_onnx_meta
from bbc1k.serving.decode import decode_image
from bbc1k.serving.preprocess import fit_image, prepare

INT8_KEY = "int8"
"""Where an int8 copy's description records how it was made and checked."""
TOLERANCE = 0.005
"""The largest drop of the validation score (0..1) an int8 copy may show: half a point."""
CALIBRATION_SEED = 20_240_601
CALIBRATION_IMAGES = 64
AGREEMENT_IMAGES = 512
"""Without labelled images, how many of the calibration set the int8 copy's
agreement with float32 is judged on: more than it is calibrated on, so one
disagreement is not a whole point (on 64 images the half-point tolerance
allowed none) and the judgement is not only on the images it was fitted to."""


class QuantizeError(RuntimeError):
    pass


def int8_path(path: str | os.PathLike) -> Path:
    """Where the int8 copy of ``X.onnx`` lies: ``X.int8.onnx``, beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8.onnx")


def prepared(sample: Any, meta: ModelMeta) -> np.ndarray:
    """One model input (CHW float32) from an image file or an already prepared array."""
    if isinstance(sample, np.ndarray):
        return sample.astype(np.float32, copy=False)
    return prepare(decode_image(Path(sample).read_bytes()).image, meta)[0]


def synthetic_inputs(meta: ModelMeta, n: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """``n`` synthetic bbc1k photos (numpy and Pillow only, rendered at 320x240:
    larger than the models' inputs, and quick), prepared for ``meta``."""
    from bbc1k.synth import render_sample

    return [prepare(render_sample(CALIBRATION_SEED, i, size=(320, 240))[0], meta)[0] for i in range(n)]


class _Reader:
    """ONNX Runtime's calibration reader (duck-typed: its ``CalibrationDataReader``
    takes any class with ``get_next``), one prepared input at a time."""

    def __init__(self, meta: ModelMeta, samples: Sequence[Any]) -> None:
        self.meta, self.samples, self.i = meta, samples, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return {self.meta.input_name: prepared(self.samples[self.i - 1], self.meta)[None]}


def _quantize_tools() -> tuple[Any, Any]:
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError as e:
        raise QuantizeError(f"quantisation needs the onnx package ({e}); pip install onnx") from None
    return onnx, quantization


def quantize(src: str | os.PathLike, dst: str | os.PathLike, calibration: Sequence[Any] | None = None, *,
             meta: ModelMeta | None = None, facts: dict[str, Any] | None = None) -> Path:
    """Write an int8 copy of ``src`` to ``dst`` (atomically), calibrated on
    ``calibration`` (image files or prepared inputs; default: synthetic photos).
    Its bbc1k description is the model's, with ``extra["int8"]``: the SHA-256
    of ``src``, the calibration and ``facts``."""
    onnx, q = _quantize_tools()
    src, dst = Path(src), Path(dst)
    meta = meta or read_onnx_meta(str(src))
    samples = list(calibration) if calibration is not None else synthetic_inputs(meta)
    if not samples:
        raise QuantizeError("no calibration images")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # 7-bit weights (reduce_range): on CPUs without VNNI (AVX2 only, as on many cloud
        # hosts) the uint8 x int8 products saturate their 16-bit sums, and full-range copies
        # agreed with float32 on 67% of the photos there (100% with 7 bits).
        q.quantize_static(str(pre), str(out), _Reader(meta, samples), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, reduce_range=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          # A BatchNorm after a max-pool stays in the graph (nothing folds it into the
                          # convolution); its per-channel scale is a vector, its channels on axis 0.
                          extra_options={"QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}})
        proto = onnx.load(str(out))
        described = ModelMeta.from_json(meta.to_json())
        described.extra = {**meta.extra, INT8_KEY: {
            "format": "static QDQ, per-channel int8 weights (7-bit range), uint8 activations",
            "source_sha256": sha256_of(src), "calibration_images": len(samples),
            "calibration": "synthetic bbc1k photos" if calibration is None else "training images",
            **(facts or {})}}
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, META_KEY: described.to_json()})
        onnx.save(proto, str(out))
        os.chmod(out, 0o644)  # a non-root server must be able to read it
        os.replace(out, dst)
    return dst


# ---- scoring: the figure each task is judged by, on 0..1 -------------------------


def _run(session: Any, meta: ModelMeta, inputs: list[np.ndarray], kind: str, batch: int = 16) -> np.ndarray:
    name = meta.output(kind).name
    return np.concatenate([session.run([name], {meta.input_name: np.stack(inputs[i:i + batch])})[0]
                           for i in range(0, len(inputs), batch)])


def _mask_target(target: Any, sample: Any, meta: ModelMeta) -> np.ndarray:
    """A mask of class indices (a file or an array in image pixels) fitted to the model input."""
    mask = Image.open(target) if not isinstance(target, np.ndarray) else Image.fromarray(target.astype(np.uint8))
    if not isinstance(sample, np.ndarray):  # masks follow the image's EXIF-upright size
        size = decode_image(Path(sample).read_bytes()).image.size
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return np.asarray(fit_image(mask.convert("L"), meta, resample=Image.Resampling.NEAREST)[0])


def _boxes_in_pixels(session: Any, meta: ModelMeta, inputs: list[np.ndarray]) -> np.ndarray:
    """The model's boxes, xyxy in model-input pixels."""
    lo, hi = meta.output("box").box_range or (-1.0, 1.0)
    in_h, in_w = meta.input_size
    return (_run(session, meta, inputs, "box") - lo) / (hi - lo) * np.array([in_w, in_h, in_w, in_h])


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _mean_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    ious = []
    for c in range(n_classes):
        union = np.logical_or(pred == c, truth == c).sum()
        if union:
            ious.append(np.logical_and(pred == c, truth == c).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


@dataclass
class _Check:
    """What the float32 and int8 models are compared on: the metric's name and
    ``score(session) -> 0..1``."""

    metric: str
    inputs: list[np.ndarray]
    targets: Any
    meta: ModelMeta

    def score(self, session: Any) -> float:
        m, t = self.meta, self.targets
        if self.metric == "accuracy":
            return float(np.mean(_run(session, m, self.inputs, "class_logits").argmax(1) == t))
        if self.metric == "mean IoU":
            return _mean_iou(_run(session, m, self.inputs, "mask_logits").argmax(1), t, len(m.classes))
        return float(_box_iou(_boxes_in_pixels(session, m, self.inputs), t).mean())


def _check_for(meta: ModelMeta, validation: Sequence[tuple[Any, Any]]) -> _Check:
    """How to judge a model of ``meta``'s task on ``(sample, target)`` pairs:
    class names or indices -> accuracy; masks (files or arrays) -> mean IoU
    for a segmenter, IoU of the tight box of the object pixels for a detector."""
    inputs = [prepared(s, meta) for s, _ in validation]
    targets = [t for _, t in validation]
    if meta.output("class_logits") is not None and all(isinstance(t, (int, np.integer, str)) for t in targets):
        idx = [meta.classes.index(t) if isinstance(t, str) else int(t) for t in targets]
        return _Check("accuracy", inputs, np.asarray(idx), meta)
    masks = [_mask_target(t, s, meta) for s, t in validation]
    if meta.output("mask_logits") is not None:
        return _Check("mean IoU", inputs, np.stack(masks), meta)
    if meta.output("box") is not None:
        boxes = []
        for mask in masks:
            x, y, w, h = tight_box(mask > 0)
            boxes.append((x, y, x + w, y + h))
        return _Check("box IoU", inputs, np.asarray(boxes, dtype=np.float64), meta)
    raise QuantizeError(f"cannot judge a {meta.task!r} model on these targets")


def _agreement_check(meta: ModelMeta, session: Any, samples: Sequence[Any]) -> _Check:
    """Without labelled images: the float32 model's own answers are the targets."""
    inputs = [prepared(s, meta) for s in samples]
    if meta.output("class_logits") is not None:
        return _Check("accuracy", inputs, _run(session, meta, inputs, "class_logits").argmax(1), meta)
    if meta.output("mask_logits") is not None:
        return _Check("mean IoU", inputs, _run(session, meta, inputs, "mask_logits").argmax(1), meta)
    return _Check("box IoU", inputs, _boxes_in_pixels(session, meta, inputs), meta)


@dataclass
class Int8Report:
    """What :func:`write_int8_copy` did: the copy (None when refused) and the scores."""

    path: Path | None
    metric: str
    float32: float
    int8: float
    n: int
    agreement: bool  # scored against the float32 model's answers, for want of labels

    def line(self) -> str:
        against = "agreement with float32" if self.agreement else self.metric
        figures = f"{against} float32 {self.float32:.4f}, int8 {self.int8:.4f} on {self.n} images"
        if self.path is None:
            return f"int8 copy not written: {figures} (more than {TOLERANCE * 100:g} point lost)"
        return f"int8 copy {self.path.name}: {figures}"


def write_int8_copy(onnx_path: str | os.PathLike, calibration: Sequence[Any] | None = None,
                    validation: Sequence[tuple[Any, Any]] | None = None, *, tolerance: float = TOLERANCE,
                    max_calibration: int = CALIBRATION_IMAGES) -> Int8Report:
    """Write ``X.int8.onnx`` beside ``onnx_path``, calibrated on (up to
    ``max_calibration`` of) ``calibration`` (training image files or prepared
    inputs; default synthetic photos), when its score on ``validation``
    (``(image, target)`` pairs, see :func:`_check_for`; default: agreement with
    the float32 model on up to :data:`AGREEMENT_IMAGES` of ``calibration``)
    is at most ``tolerance`` below the float32 model's. An older copy is
    removed first, so a copy beside a model is always made from it."""
    import onnxruntime as ort

    src = Path(onnx_path)
    dst = int8_path(src)
    dst.unlink(missing_ok=True)
    meta = read_onnx_meta(str(src))
    synthetic = calibration is None
    items = None if synthetic else list(calibration)
    calib = synthetic_inputs(meta, max_calibration) if synthetic else _spread(items, max_calibration)
    f32 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    agreement = not validation
    if agreement:
        chk = _agreement_check(meta, f32, calib if synthetic else _spread(items, AGREEMENT_IMAGES))
    else:
        chk = _check_for(meta, validation)
    s32 = chk.score(f32)
    with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
        how = {"calibration": "synthetic bbc1k photos"} if synthetic else None
        trial = quantize(src, Path(tmp) / dst.name, calib, meta=meta, facts=how)
        s8 = chk.score(ort.InferenceSession(str(trial), providers=["CPUExecutionProvider"]))
        report = Int8Report(None, chk.metric, s32, s8, len(chk.inputs), agreement)
        if s32 - s8 > tolerance:
            return report
        check = {"metric": chk.metric, "float32": round(s32, 5), "int8": round(s8, 5), "n": len(chk.inputs),
                 "against": "float32 answers" if agreement else "validation labels"}
        _restamp(trial, dst, check)
    report.path = dst
    return report


def int8_copy_from_split(onnx_path: str | os.PathLike, images: Sequence[Any], targets: Sequence[Any],
                         train_idx: Sequence[int], valid_idx: Sequence[int], **options: Any) -> Int8Report:
    """:func:`write_int8_copy` for a recipe's seeded split of one dataset:
    calibrated on ``images[train_idx]``, judged on ``(images[i], targets[i])``
    for ``i`` in ``valid_idx`` (class names, or mask files for a segmenter or
    a detector; without a validation split, by agreement with float32)."""
    validation = [(images[i], targets[i]) for i in valid_idx]
    return write_int8_copy(onnx_path, [images[i] for i in train_idx], validation or None, **options)


def _restamp(trial: Path, dst: Path, check: dict[str, Any]) -> None:
    """Add the check's figures to the trial copy's description and move it into place."""
    onnx, _ = _quantize_tools()
    proto = onnx.load(str(trial))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMeta.from_json(props[META_KEY])
    meta.extra[INT8_KEY] = {**meta.extra[INT8_KEY], "check": check}
    onnx.helper.set_model_props(proto, {**props, META_KEY: meta.to_json()})
    onnx.save(proto, str(trial))
    os.chmod(trial, 0o644)
    os.replace(trial, dst)


def _spread(items: list[Any], n: int) -> list[Any]:
    """At most ``n`` of ``items``, evenly spread (a class-sorted list keeps every class)."""
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The images in ``folder`` and its class subfolders, sorted."""
    from bbc1k.layout import IMAGE_SUFFIXES

    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
