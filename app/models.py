"""Fetch and load the served models.

A model source is a local path, an https URL or a Google Drive link / id.
Remote files are fetched once into the cache by :func:`bbc1k.download.download`
(resumable, verified, atomic). ONNX files are served through ONNX Runtime with
the bbc1k description they carry; a fastai ``.pkl`` is loaded only when
pickles are explicitly allowed (unpickling runs code).
"""
from __future__ import annotations

import hashlib
import logging
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.config import ModelSource, Settings
from bbc1k.download import DownloadError, download, drive_url, sha256_of
from bbc1k.modelmeta import META_KEY, ModelMeta, OutputSpec
from bbc1k.serving.preprocess import Fit, prepare
from bbc1k.serving.runtime import cpu_count, open_session

log = logging.getLogger("bbc1k.serve")

# Which model tasks can fill each role.
ROLE_TASKS = {
    "classifier": ("classify", "classify+detect"),
    "detector": ("detect", "classify+detect"),
    "segmenter": ("segment",),
}
ROLE_OUTPUT = {"classifier": "class_logits", "detector": "box", "segmenter": "mask_logits"}


class ModelError(RuntimeError):
    """A model that cannot be fetched or loaded; the message says which and why."""


def _cache_name(url: str, sha256: str | None) -> str:
    """A stable cache file name for a remote model."""
    if sha256:
        return f"sha256-{sha256.lower()}"
    base = Path(urllib.parse.urlparse(url).path).name or "model"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"{digest}-{base}"


def fetch(src: ModelSource, cache: Path) -> Path:
    """The local file of a model source, downloading it into ``cache`` once."""
    text = src.source.strip()
    local = Path(text).expanduser()
    if local.is_file():
        if src.sha256 and sha256_of(local) != src.sha256.lower():
            raise ModelError(f"{local}: sha256 mismatch (expected {src.sha256.lower()}, got {sha256_of(local)})")
        return local
    url = drive_url(text)
    if url is None:
        if urllib.parse.urlparse(text).scheme not in ("http", "https"):
            raise ModelError(f"{text!r} is neither an existing file, an http(s) URL nor a Google Drive link")
        url = text
    dest = cache / _cache_name(text, src.sha256)
    if dest.is_file() and not src.sha256:
        return dest  # fetched before; with a sha256, download() re-checks the cached copy
    try:
        return download(url, dest, sha256=src.sha256, progress=False)
    except DownloadError as e:
        if "HTML page" in str(e) and drive_url(text):
            e = e.with_hint("Google Drive answers with an HTML page when the file is not shared "
                            "'anyone with the link' or its download quota is used up")
        raise ModelError(str(e).replace("\n", ";")) from None


def _is_pickle(path: Path) -> bool:
    """fastai's learn.export() writes a torch.save zip (or a plain pickle)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


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
                "file": self.path.name, "extra": m.extra}


def _read_meta(session: Any, path: Path) -> ModelMeta:
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ModelError(f"{path}: no '{META_KEY}' description in the ONNX metadata; export it with bbc1k.export")
    try:
        return ModelMeta.from_json(props[META_KEY])
    except (ValueError, TypeError) as e:
        raise ModelError(f"{path}: bad bbc1k description ({e})") from None


def _check_role(role: str, meta: ModelMeta, path: Path) -> None:
    if meta.task not in ROLE_TASKS[role] or meta.output(ROLE_OUTPUT[role]) is None:
        raise ModelError(f"{path}: a {meta.task!r} model cannot be the {role} "
                         f"(needs task {' or '.join(ROLE_TASKS[role])} with a {ROLE_OUTPUT[role]} output)")


def load_onnx(role: str, path: Path, source: str, settings: Settings) -> ServedModel:
    quantized = False
    try:
        session = open_session(path, threads=settings.threads, cache_dir=settings.optimized_cache)
    except Exception as e:
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:300]})") from None
    meta = _read_meta(session, path)
    _check_role(role, meta, path)
    if settings.quantize:
        from app.quantize import QuantizeError, quantized_copy

        try:
            qpath = quantized_copy(path, meta, settings.model_cache)
        except QuantizeError as e:
            raise ModelError(str(e)) from None
        session = open_session(qpath, threads=settings.threads, cache_dir=settings.optimized_cache)
        path, quantized = qpath, True
    return ServedModel(role, meta, path, source, "onnx", quantized, session)


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


def load_model(src: ModelSource, settings: Settings) -> ServedModel:
    """Fetch and load one model; raises :class:`ModelError` with one clear line."""
    path = fetch(src, settings.model_cache)
    if _is_pickle(path):
        return load_pickle(src.role, path, src.source, settings)
    return load_onnx(src.role, path, src.source, settings)


def discover(folder: Path, skip: set[str]) -> list[ModelSource]:
    """Sources for the ``.onnx`` files in ``folder``, by the role their task
    fits (classify+detect counts as the detector); roles in ``skip`` are left out."""
    if not folder.is_dir():
        raise ModelError(f"MODELS_DIR {folder} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.onnx")):
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


def load_all(settings: Settings) -> dict[str, ServedModel]:
    models = {}
    sources = list(settings.models)
    if settings.models_dir is not None:
        sources += discover(settings.models_dir, {s.role for s in sources})
    for src in sources:
        try:
            models[src.role] = load_model(src, settings)
        except ModelError as e:
            raise ModelError(f"cannot load the {src.role} ({src.role.upper()}={src.source}): {e}") from None
        m = models[src.role]
        log.info("%s: %s (%s, %s, classes %s)%s", src.role, m.meta.name, m.meta.task, m.kind,
                 ", ".join(m.meta.classes), " int8" if m.quantized else "")
    return models
