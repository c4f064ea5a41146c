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
        os.chmod(tmp, 0o644)  # mkstemp makes 0600: a non-root server must be able to read it
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


BOX_OUTPUTS = 4
"""A detector's (or multitask model's) first four outputs are its box."""


def export_learner(learn: Any, name: str, out_dir: str | os.PathLike, task: str, *,
                   classes: list[str] | None = None, extra: dict[str, Any] | None = None,
                   resize: str | None = None, n_sample: int = 4, int8: bool = True) -> dict[str, Path]:
    """Write ``<name>.pkl`` (``learn.export``) and ``<name>.onnx`` (with its
    bbc1k description, checked against PyTorch on a validation batch) into
    ``out_dir``, and with ``int8`` its int8 copy ``<name>.int8.onnx`` when that
    scores within half a point of it (:func:`learner_int8_copy`); return
    ``{"pkl": path, "onnx": path}`` (and ``"int8": path`` when written).

    ``task`` says what the network's output means:

    - ``classify``: ``[N, C]`` logits over ``classes`` (default ``dls.vocab``).
    - ``detect``: ``[N, 4]`` box, x0 y0 x1 y1 in [-1, 1].
    - ``segment``: ``[N, C, H, W]`` logits over the mask codes (default ``dls.vocab``).
    - ``classify+detect``: ``[N, 4 + C]`` (box first, then logits) or a
      ``(box, logits)`` pair; the ONNX graph gets two outputs, ``box`` and ``logits``.

    The input size, normalisation and resize method are read from the
    learner's DataLoaders; ``resize`` overrides the method when no ``Resize``
    item transform is there to read. ``extra`` is merged into the training
    facts kept in the description (architecture, last metrics, sizes, date).

    The ``.pkl`` is pickled by fastai with cloudpickle, so heads, losses and
    metrics defined in a notebook travel with it and ``load_learner`` works in
    a fresh Python that has fastai (and bbc1k) installed.
    """
    import torch

    from bbc1k.modelmeta import ModelMeta

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dls = learn.dls
    facts = {**training_facts(learn), **(extra or {})}  # validates: while the model is where it trains
    sample = dls.valid.one_batch()[0][:n_sample]
    sample = sample.as_subclass(torch.Tensor).detach().cpu().float()
    size = [int(sample.shape[-2]), int(sample.shape[-1])]
    mean, std = _normalization(dls)
    network = learn.model
    device = next(network.parameters()).device
    was_training = network.training
    try:
        model = _serving_model(network, task)
        classes = list(classes) if classes is not None else _default_classes(dls, task)
        outputs = _output_specs(model, sample, task, classes)
        meta = ModelMeta(task=task, name=name, classes=classes, input_size=size, outputs=outputs,
                         mean=mean, std=std, resize=resize or _resize_method(dls),
                         extra=facts)
        onnx_path = export_onnx(model, meta, out / f"{name}.onnx", sample)
    finally:
        # export_onnx moves the network to the CPU in eval mode; give the learner back as it was.
        network.to(device).train(was_training)
    pkl_path = out / f"{name}.pkl"
    learn.export(pkl_path.resolve())
    written = {"pkl": pkl_path, "onnx": onnx_path}
    if int8:
        report = learner_int8_copy(learn, onnx_path, task)
        print(report.line())
        if report.path is not None:
            written["int8"] = report.path
    return written


def learner_int8_copy(learn: Any, onnx_path: Path, task: str, n_calibration: int = 64) -> Any:
    """The int8 copy of a learner's export (:func:`bbc1k.quantize.write_int8_copy`):
    calibrated on training images (with the validation transforms), judged on
    the validation set against its labels (classes, masks), or, for box
    models, by agreement with the float32 model."""
    import torch

    from bbc1k.quantize import write_int8_copy

    def arrays(batch: Any) -> list:
        return list(batch.as_subclass(torch.Tensor).detach().cpu().float().numpy())

    dls = learn.dls
    items = dls.train.items
    step = max(1, len(items) // n_calibration)
    # with their labels: a box learner's batching (bb_pad) needs whole samples; the
    # validation transforms either way, as at serving
    calibration = [x for b in dls.test_dl(items[::step][:n_calibration], with_labels=True) for x in arrays(b[0])]
    validation = None
    if task in ("classify", "segment"):
        validation = [(x, y if task == "segment" else int(y))
                      for xb, yb in ((b[0], b[1]) for b in dls.valid)
                      for x, y in zip(arrays(xb), yb.as_subclass(torch.Tensor).cpu().numpy())]
    return write_int8_copy(onnx_path, calibration, validation)


def _serving_model(network: Any, task: str) -> Any:
    if task != "classify+detect":
        return network
    from bbc1k.nets import SplitBoxLogits

    return SplitBoxLogits(network, BOX_OUTPUTS)


def _vocab(dls: Any) -> list | None:
    """The DataLoaders' class names: ``dls.vocab``, or a MaskBlock's codes."""
    for get in (lambda: dls.vocab, lambda: dls.valid.after_item.vocab):
        try:
            vocab = get()
        except AttributeError:
            continue
        if vocab is not None:
            return list(vocab)
    return None


def _default_classes(dls: Any, task: str) -> list[str]:
    from bbc1k.layout import OBJECT_CLASSES

    vocab = _vocab(dls)
    if vocab and all(isinstance(v, str) for v in vocab):
        # fastai's box labels reserve index 0 ('#na#') for padding; it is no class.
        return [v for v in vocab if v != "#na#"] if task in ("detect", "classify+detect") else vocab
    if task in ("detect", "classify+detect"):
        return list(OBJECT_CLASSES)
    raise ValueError(f"task {task!r}: cannot tell the class names from the DataLoaders' vocab "
                     f"({vocab!r}); pass classes=[...]")


def _output_specs(model: Any, sample: Any, task: str, classes: list[str]) -> list:
    """The outputs' descriptions, after checking the network gives what ``task`` promises."""
    import torch

    from bbc1k.modelmeta import TASKS, OutputSpec

    box = OutputSpec("box", "box", ["N", BOX_OUTPUTS], box_format="xyxy", box_range=[-1.0, 1.0])
    c = len(classes)
    with torch.no_grad():
        y = model.eval().cpu().float()(sample)
    shapes = [tuple(t.shape[1:]) for t in (y if isinstance(y, (tuple, list)) else (y,))]
    h, w = sample.shape[-2:]
    if task == "classify":
        want, specs = [(c,)], [OutputSpec("logits", "class_logits", ["N", c])]
    elif task == "detect":
        want, specs = [(BOX_OUTPUTS,)], [box]
    elif task == "segment":
        want, specs = [(c, h, w)], [OutputSpec("mask", "mask_logits", ["N", c, h, w])]
    elif task == "classify+detect":
        want, specs = [(BOX_OUTPUTS,), (c,)], [box, OutputSpec("logits", "class_logits", ["N", c])]
    else:
        raise ValueError(f"export_learner exports {TASKS[:4]}, not {task!r}")
    if shapes != want:
        raise ValueError(f"task {task!r} with {c} classes expects output shape(s) {want} per image, "
                         f"but the network gives {shapes}")
    return specs


def _normalization(dls: Any) -> tuple[list[float], list[float]]:
    from fastai.data.transforms import Normalize

    norms = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    if not norms:
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    n = norms[-1]
    return ([float(v) for v in n.mean.detach().cpu().flatten()],
            [float(v) for v in n.std.detach().cpu().flatten()])


def _resize_method(dls: Any) -> str:
    """How the validation images are fitted to the input size (fastai item transforms)."""
    from fastai.vision.augment import PadMode, RandomResizedCrop, Resize, ResizeMethod

    for t in dls.valid.after_item.fs:
        if isinstance(t, RandomResizedCrop):
            return "crop"  # validation takes the centre crop
        if isinstance(t, Resize):
            if t.method == ResizeMethod.Pad and t.pad_mode != PadMode.Zeros:
                raise ValueError(f"Resize(method='pad', pad_mode={t.pad_mode!r}) cannot be reproduced by the "
                                 "server, which pads with black; use pad_mode='zeros' or another method")
            return str(t.method)
    raise ValueError("no Resize item transform found in the DataLoaders; pass resize='squish'|'crop'|'pad'")


def training_facts(learn: Any) -> dict[str, Any]:
    """What the description records about how a learner was trained, with its
    loss and metrics on the validation set, measured now."""
    from datetime import datetime, timezone

    import fastai
    import torch

    arch = getattr(learn, "arch", None)
    facts: dict[str, Any] = {
        "architecture": getattr(arch, "__name__", None) or type(learn.model).__name__,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fastai": fastai.__version__,
        "torch": torch.__version__,
        "n_train": len(learn.dls.train_ds),
        "n_valid": len(learn.dls.valid_ds),
    }
    if getattr(learn, "pretrained", None) is not None:
        facts["pretrained"] = bool(learn.pretrained)
    # Measured afresh: the recorder's last row is gone after get_preds or an interpretation.
    values = learn.validate()
    names = ["valid_loss", *(m.name for m in learn.metrics)]
    facts["metrics"] = {n: round(float(v), 5) for n, v in zip(names, values) if v is not None}
    return facts
