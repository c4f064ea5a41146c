"""Fetch and load the served models.

Sources are fetched by :mod:`app.fetch`; a cached download that no longer
loads is fetched again. ONNX files are served through ONNX Runtime with the
bbc1k description they carry, and ``X.onnx`` by its int8 copy
``X.int8.onnx`` when export wrote one (made from this very file, as the
copy's description records) unless ``--float32``; a fastai ``.pkl`` is loaded
only when pickles are explicitly allowed (unpickling runs code).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.config import ModelSource, Settings
from app.fetch import BrokenModel, ModelError, Progress, fetch, is_pickle, read_meta
from bbc1k.modelmeta import ModelMeta, OutputSpec
from bbc1k.quantize import INT8_KEY, int8_path
from bbc1k.serving.preprocess import Fit, prepare
from bbc1k.serving.runtime import content_sha256, cpu_count, open_session

log = logging.getLogger("bbc1k.serve")

# Which model tasks can fill each role.
ROLE_TASKS = {
    "classifier": ("classify", "classify+detect"),
    "detector": ("detect", "classify+detect"),
    "segmenter": ("segment",),
}
ROLE_OUTPUT = {"classifier": "class_logits", "detector": "box", "segmenter": "mask_logits"}


@dataclass
class ServedModel:
    """A loaded model in one role. :meth:`prepare` runs per request (in a
    worker thread), :meth:`run` per batch (in the inference thread)."""

    role: str
    meta: ModelMeta
    path: Path
    source: str
    kind: str  # "onnx" or "pickle"
    quantized: bool = False
    _impl: Any = field(default=None, repr=False)
    float32_path: Path | None = None  # the model the int8 copy was made from

    def prepare(self, image: Image.Image) -> tuple[Any, Fit | None]:
        if self.kind == "pickle":
            return image, None  # learn.predict resizes by itself
        return prepare(image, self.meta)

    def run(self, items: list[Any]) -> list[dict[str, np.ndarray]]:
        """Outputs by kind (class_logits, box, mask_logits) for each item."""
        if self.kind == "pickle":
            return [self._impl.predict_one(im) for im in items]
        outs = self._impl.run(None, {self.meta.input_name: np.stack(items)})
        kinds = [o.kind for o in self.meta.outputs]
        return [{k: o[i] for k, o in zip(kinds, outs)} for i in range(len(items))]

    def describe(self) -> dict[str, Any]:
        m = self.meta
        return {"role": self.role, "name": m.name, "task": m.task, "classes": m.classes,
                "input_size": m.input_size, "resize": m.resize, "format": self.kind,
                "quantized": self.quantized, "outputs": [o.kind for o in m.outputs],
                "file": self.path.name, "float32_file": self.float32_path.name if self.float32_path else None,
                "extra": m.extra}


def _check_role(role: str, meta: ModelMeta, path: Path) -> None:
    if meta.task not in ROLE_TASKS[role] or meta.output(ROLE_OUTPUT[role]) is None:
        raise ModelError(f"{path}: a {meta.task!r} model cannot be the {role} "
                         f"(needs task {' or '.join(ROLE_TASKS[role])} with a {ROLE_OUTPUT[role]} output)")


def _open(path: Path, settings: Settings, model_sha256: str | None = None) -> Any:
    try:
        return open_session(path, threads=settings.threads, cache_dir=settings.optimized_cache,
                            model_sha256=model_sha256)
    except Exception as e:
        raise BrokenModel(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:300]})") from None


def _int8_copy(path: Path, settings: Settings) -> tuple[Path, str] | None:
    """``(X.int8.onnx, sha256 of X.onnx)`` when the int8 copy beside ``path`` is there."""
    q = int8_path(path)
    return (q, content_sha256(path, settings.optimized_cache)) if q.is_file() and q != path else None


def load_onnx(role: str, path: Path, source: str, settings: Settings) -> ServedModel:
    """The model at ``path``, served by its int8 copy when one made from it lies beside it."""
    copy = None if settings.float32 else _int8_copy(path, settings)
    if copy is not None:
        qpath, source_sha = copy
        try:
            session = _open(qpath, settings)
            meta = read_meta(session, qpath)
        except BrokenModel as e:
            log.warning("%s: the int8 copy does not load (%s); serving the float32 model", role, e)
        else:
            if (meta.extra.get(INT8_KEY) or {}).get("source_sha256") == source_sha:
                _check_role(role, meta, qpath)
                return ServedModel(role, meta, qpath, source, "onnx", True, session, float32_path=path)
            log.warning("%s: %s was not made from %s (re-exported since?); serving the float32 model",
                        role, qpath.name, path.name)
            del session
    session = _open(path, settings)
    meta = read_meta(session, path)
    _check_role(role, meta, path)
    return ServedModel(role, meta, path, source, "onnx", False, session)


class _FastaiPredictor:
    """The 2020 design: ``learn.predict`` on one image per request."""

    def __init__(self, learn: Any):
        self.learn = learn

    def predict_one(self, image: Image.Image) -> dict[str, np.ndarray]:
        from fastai.vision.core import PILImage

        _, _, probs = self.learn.predict(PILImage.create(np.asarray(image)))
        return {"class_logits": np.log(np.clip(probs.numpy().astype(np.float64), 1e-12, None))}


def load_pickle(role: str, path: Path, source: str, settings: Settings) -> ServedModel:
    if not settings.allow_pickle:
        raise ModelError(f"{path} is a pickle (fastai .pkl); unpickling runs code, so it is refused "
                         "unless you pass --allow-pickle (ALLOW_PICKLE=1); serve the .onnx export instead")
    if role != "classifier":
        raise ModelError(f"{path}: only a classifier may be a fastai .pkl; serve the {role}'s .onnx export")
    log.warning("loading pickle %s: unpickling executes code; only load files you trust", path)
    try:
        import torch
        from fastai.learner import load_learner
    except ImportError:
        raise ModelError(f"{path}: a .pkl needs fastai and torch installed (pip install fastai); "
                         "the serving image has neither: serve the .onnx export") from None

    torch.set_num_threads(settings.threads or cpu_count())
    try:
        learn = load_learner(path, cpu=True)
    except Exception as e:
        raise ModelError(f"{path}: fastai cannot load it ({type(e).__name__}: {e})") from None
    vocab = [str(c) for c in learn.dls.vocab]
    meta = ModelMeta(task="classify", name=path.stem, classes=vocab, input_size=[0, 0],
                     outputs=[OutputSpec("class_logits", "class_logits", ["N", len(vocab)])],
                     extra={"loaded_from": "fastai pickle"})
    return ServedModel(role, meta, path, source, "pickle", False, _FastaiPredictor(learn))


def _load_file(src: ModelSource, path: Path, settings: Settings) -> ServedModel:
    if is_pickle(path):
        return load_pickle(src.role, path, src.source, settings)
    return load_onnx(src.role, path, src.source, settings)


def load_model(src: ModelSource, settings: Settings, *, deadline_s: float | None = None,
               progress: Progress | None = None) -> ServedModel:
    """Fetch and load one model; raises :class:`ModelError` with one clear line.
    A cached download that no longer loads is deleted and fetched once more."""
    def get() -> Path:
        return fetch(src, settings.model_cache, allow_pickle=settings.allow_pickle, deadline_s=deadline_s,
                     progress=progress)

    path = get()
    try:
        return _load_file(src, path, settings)
    except BrokenModel as e:
        if settings.model_cache not in path.parents:
            raise
        log.warning("%s: the cached %s does not load (%s); fetching it again", src.role, path.name, e)
        path.unlink(missing_ok=True)
    return _load_file(src, get(), settings)


def discover(folder: Path, skip: set[str]) -> list[ModelSource]:
    """Sources for the ``.onnx`` files in ``folder``, by the role their task
    fits (classify+detect counts as the detector); roles in ``skip`` are left out."""
    if not folder.is_dir():
        raise ModelError(f"MODELS_DIR {folder} is not a folder")
    found: dict[str, Path] = {}
    paths = sorted(folder.glob("*.onnx"))
    for path in paths:
        if any(int8_path(p) == path for p in paths):
            continue  # an int8 copy: served in place of its model
        try:
            from bbc1k.modelmeta import read_onnx_meta

            task = read_onnx_meta(str(path)).task
        except Exception as e:
            raise ModelError(f"{path}: not a bbc1k ONNX export ({type(e).__name__}: {str(e)[:200]})") from None
        role = {"classify": "classifier", "detect": "detector", "classify+detect": "detector",
                "segment": "segmenter"}.get(task)
        if role is None or role in skip:
            continue
        if role in found:
            raise ModelError(f"{folder} holds two models for the {role} ({found[role].name}, {path.name}); "
                             f"choose one with {role.upper()}=")
        found[role] = path
    return [ModelSource(role, str(path)) for role, path in found.items()]


def load_all(settings: Settings, progress: Progress | None = None) -> dict[str, ServedModel]:
    """Every configured model, fetched and loaded within ``settings.load_timeout_s``
    (downloads get what is left of it)."""
    started = time.monotonic()
    models = {}
    sources = list(settings.models)
    if settings.models_dir is not None:
        sources += discover(settings.models_dir, {s.role for s in sources})
    for src in sources:
        left = settings.load_timeout_s - (time.monotonic() - started)
        if progress:
            progress.note(src.role, "loading")
        try:
            models[src.role] = load_model(src, settings, deadline_s=max(left, 0.1), progress=progress)
        except ModelError as e:
            raise ModelError(f"cannot load the {src.role} ({src.role.upper()}={src.source}): {e}") from None
        m = models[src.role]
        if progress:
            progress.note(src.role, "loaded")
        log.info("%s: %s (%s, %s, classes %s)%s", src.role, m.meta.name, m.meta.task, m.kind,
                 ", ".join(m.meta.classes), " int8" if m.quantized else "")
    return models
