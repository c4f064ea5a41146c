"""Export trained networks for serving: ``<name>.onnx`` with its bbc1k
description (see docs/model-format.md), checked against PyTorch before it is
written. torch, onnx and onnxruntime are imported inside the functions."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from bbc1k.modelmeta import META_KEY, ModelMeta

OPSET = 17


class ExportMismatch(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond tolerance."""


def export_onnx(model: Any, meta: ModelMeta, path: str | os.PathLike, sample: Any,
                *, rtol: float = 1e-3, atol: float = 1e-4) -> Path:
    """Write ``model`` (a torch ``nn.Module`` taking one NCHW float32 batch and
    returning one tensor per ``meta.outputs`` entry) to ``path`` as ONNX with a
    dynamic batch axis and ``meta`` in its metadata_props.

    ``sample`` is a batch the export traces and then runs through both PyTorch
    and ONNX Runtime; if they disagree beyond ``rtol``/``atol`` nothing is
    written and :class:`ExportMismatch` is raised.
    """
    import onnx
    import torch

    path = Path(path)
    model = model.eval().cpu().float()
    sample = sample.detach().cpu().float()
    in_name = meta.input_name
    out_names = [o.name for o in meta.outputs]
    dynamic = {n: {0: "N"} for n in [in_name, *out_names]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            # The TorchScript exporter handles fastai's hooked models (DynamicUnet)
            # that the dynamo exporter cannot trace.
            torch.onnx.export(model, (sample,), tmp, input_names=[in_name], output_names=out_names,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {META_KEY: meta.to_json()})
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        check_onnx_matches(model, tmp, sample, rtol=rtol, atol=atol)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_onnx_matches(model: Any, onnx_path: str | os.PathLike, sample: Any,
                       *, rtol: float = 1e-3, atol: float = 1e-4) -> float:
    """Run ``sample`` through ``model`` and the ONNX file; return the largest
    absolute difference, or raise :class:`ExportMismatch`."""
    import numpy as np
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        expected = model(sample)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: sample.numpy()})
    if len(got) != len(expected):
        raise ExportMismatch(f"ONNX gives {len(got)} outputs, PyTorch {len(expected)}")
    worst = 0.0
    for name, e, g in zip([o.name for o in sess.get_outputs()], expected, got):
        e = e.detach().cpu().float().numpy()
        if e.shape != g.shape:
            raise ExportMismatch(f"output {name!r}: ONNX shape {g.shape}, PyTorch {e.shape}")
        diff = float(np.max(np.abs(e - g))) if e.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(g, e, rtol=rtol, atol=atol):
            raise ExportMismatch(f"output {name!r}: ONNX Runtime differs from PyTorch by up to {diff:.3g} "
                                 f"(rtol={rtol}, atol={atol}); the model was not written")
    return worst
