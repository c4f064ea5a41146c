"""int8 quantisation of an exported model with ONNX Runtime's tools.

Static quantisation (QDQ, per-channel int8 weights, uint8 activations): the
activation ranges are calibrated on synthetic bbc1k photos
(:func:`bbc1k.synth.render_sample`, numpy and Pillow only), prepared exactly
as requests are. The result keeps the bbc1k description, so the server serves
it like any export. Needs the ``onnx`` package (not in the slim serving
image): quantise ahead with ``python -m app quantize IN.onnx OUT.onnx``
and serve OUT.onnx, or install onnx and pass ``--quantize``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from bbc1k.download import sha256_of
from bbc1k.modelmeta import META_KEY, ModelMeta
from bbc1k.serving.preprocess import prepare
from bbc1k.synth import render_sample

CALIBRATION_SEED = 20_240_601
CALIBRATION_IMAGES = 32


class QuantizeError(RuntimeError):
    pass


class CalibrationImages:
    """ONNX Runtime's calibration reader (duck-typed: its ``CalibrationDataReader``
    takes any class with ``get_next``, and importing it needs the onnx package):
    ``n`` synthetic photos, prepared as requests are."""

    def __init__(self, meta: ModelMeta, n: int) -> None:
        self.meta, self.n, self.i = meta, n, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.n:
            return None
        im, _, _ = render_sample(CALIBRATION_SEED, self.i)
        self.i += 1
        x, _ = prepare(im, self.meta)
        return {self.meta.input_name: x[None]}


def quantize(src: Path, dst: Path, meta: ModelMeta, *, images: int = CALIBRATION_IMAGES) -> Path:
    """Write an int8 copy of ``src`` to ``dst`` (atomically)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise QuantizeError(f"quantisation needs the onnx package ({e}); pip install onnx, or quantise ahead "
                            "with 'python -m app quantize IN.onnx OUT.onnx' and serve OUT.onnx") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        out = Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), CalibrationImages(meta, images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        proto = onnx.load(str(out))
        props = {p.key: p.value for p in proto.metadata_props}
        if META_KEY not in props:  # keep the description the server reads
            meta.extra = {**meta.extra, "quantized": "int8 static QDQ"}
            onnx.helper.set_model_props(proto, {**props, META_KEY: meta.to_json()})
            onnx.save(proto, str(out))
        os.replace(out, dst)
    return dst


def quantized_copy(src: Path, meta: ModelMeta, cache: Path) -> Path:
    """The cached int8 copy of ``src``, made on first use."""
    dst = Path(cache) / f"{sha256_of(src)[:16]}-{src.stem}.int8.onnx"
    if not dst.is_file():
        quantize(src, dst, meta)
    return dst
