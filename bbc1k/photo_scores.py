"""How exported models do on photos that carry a class label only (a folder
of class subfolders), through ONNX Runtime and the app's own preprocessing.

A classifier is right when its top class is the photo's. A segmenter is
right when the object class covering most of its predicted mask is the
photo's (no object pixels: it answered "background"). Torch-free.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bbc1k.folders import DatasetError, check_classes, find_images
from bbc1k.modelmeta import ModelMeta, read_onnx_meta
from bbc1k.serving.decode import ImageError, decode_image
from bbc1k.serving.preprocess import prepare

SCORED_KINDS = ("class_logits", "mask_logits")
"""The outputs a photo's class label can check, in order of preference."""


@dataclass
class PhotoScore:
    """One model's answers on a folder of labelled photos."""

    model: str
    kind: str                    # the output scored: "class_logits" or "mask_logits"
    correct: int
    total: int
    confusion: Counter = field(default_factory=Counter)  # (true class, answer) -> photos

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.total)

    def line(self) -> str:
        what = "top class" if self.kind == "class_logits" else "main class of the mask"
        return f"{self.model}: {what} right on {self.accuracy:.1%} of {self.total} photos"


def predicted_class(meta: ModelMeta, outputs: dict[str, np.ndarray], kind: str) -> str:
    """The class a model's outputs for one photo name (see the module's docstring)."""
    values = outputs[meta.output(kind).name][0]
    if kind == "class_logits":
        return meta.classes[int(values.argmax())]
    objects = np.bincount(values.argmax(0).ravel(), minlength=len(meta.classes))[1:]
    return meta.classes[1 + int(objects.argmax())] if objects.any() else meta.classes[0]


def scored_kind(meta: ModelMeta) -> str | None:
    """The output a class label can check, or None (a box-only detector)."""
    return next((k for k in SCORED_KINDS if meta.output(k) is not None), None)


def score_model(onnx_path: str | Path, folder: str | Path, kind: str | None = None) -> PhotoScore:
    """Score the model at ``onnx_path`` on every photo of ``folder`` (class
    subfolders named like the model's classes), by its output of ``kind``
    (default: the first of :data:`SCORED_KINDS` it has)."""
    from bbc1k.serving.runtime import open_session  # ONNX Runtime: only scoring needs it

    meta = read_onnx_meta(str(onnx_path))
    kind = kind or scored_kind(meta)
    if kind is None or meta.output(kind) is None:
        raise ValueError(f"{onnx_path}: no output of kind {kind or ' or '.join(SCORED_KINDS)!r} among "
                         f"{[(o.name, o.kind) for o in meta.outputs]}")
    classes, paths, labels = find_images(folder)
    check_classes(folder, classes, meta.classes, "the model's")
    session = open_session(onnx_path)
    wanted = meta.output(kind).name
    confusion: Counter = Counter()
    for path, label in zip(paths, labels):
        try:
            x, _ = prepare(decode_image(path.read_bytes()).image, meta)
        except ImageError as e:
            raise DatasetError(f"{path}: {e}") from None
        (values,) = session.run([wanted], {meta.input_name: x[None]})
        confusion[classes[label], predicted_class(meta, {wanted: values}, kind)] += 1
    correct = sum(n for (truth, answer), n in confusion.items() if truth == answer)
    return PhotoScore(Path(onnx_path).name, kind, correct, len(paths), confusion)
