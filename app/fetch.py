"""Fetching models: a local path, an https URL or a Google Drive link / id.

Remote files are fetched by :func:`bbc1k.download.download` (resumable,
verified, within the load deadline, progress in the log and on /healthz) and
enter the cache only once they load as a bbc1k ONNX export (or read as a
pickle, where pickles are allowed), so a URL that once answered an error page
or a cut-short body cannot leave a file that fails every later start.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import ModelSource
from bbc1k.download import DownloadError, download, drive_url, sha256_of
from bbc1k.modelmeta import META_KEY, ModelMeta

log = logging.getLogger("bbc1k.serve")


class ModelError(RuntimeError):
    """A model that cannot be fetched or loaded; the message says which and why."""


class BrokenModel(ModelError):
    """A file that is no bbc1k model at all (not ONNX, cut short, no description):
    a cached copy of it is deleted and fetched again."""


PROGRESS_EVERY_S = 5.0
"""How often a download's progress is logged."""


class Progress:
    """What the start is doing, by role: logged, and shown by /healthz."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: dict[str, str] = {}

    def note(self, role: str, text: str) -> None:
        with self._lock:
            self._notes[role] = text

    def describe(self) -> str:
        with self._lock:
            return "; ".join(f"{role}: {text}" for role, text in self._notes.items()) or "starting"

    def download_reporter(self, role: str) -> Callable[[int, int | None], None]:
        """An ``on_progress`` for :func:`download` that notes and logs every few seconds."""
        started = last = time.monotonic()

        def report(received: int, total: int | None) -> None:
            nonlocal last
            now = time.monotonic()
            of = f" of {total / 1e6:.1f}" if total else ""
            rate = received / 1e6 / max(now - started, 1e-3)
            self.note(role, f"fetched {received / 1e6:.1f}{of} MB ({rate:.2f} MB/s)")
            if now - last >= PROGRESS_EVERY_S:
                last = now
                log.info("%s: %s", role, self.describe_one(role))

        return report

    def describe_one(self, role: str) -> str:
        with self._lock:
            return self._notes.get(role, "")


def _cache_name(url: str, sha256: str | None) -> str:
    """A stable cache file name for a remote model."""
    if sha256:
        return f"sha256-{sha256.lower()}"
    base = Path(urllib.parse.urlparse(url).path).name or "model"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"{digest}-{base}"


def _remote_url(text: str) -> str:
    """The download URL of a source that is no local file; ModelError when it is no URL either."""
    url = drive_url(text)
    if url is not None:
        return url
    scheme = urllib.parse.urlparse(text).scheme
    if scheme in ("http", "https"):
        return text
    if scheme and "/" in text:
        raise ModelError(f"{text!r}: unsupported scheme {scheme!r}; give a local path or an http(s) URL")
    raise ModelError(f"{text}: no such file (a model is a local path, an http(s) URL or a Google Drive "
                     "share link)")


def fetch(src: ModelSource, cache: Path, *, allow_pickle: bool = False, deadline_s: float | None = None,
          progress: Progress | None = None) -> Path:
    """The local file of a model source. A remote one is downloaded into
    ``cache`` once, within ``deadline_s``, and enters it only when it loads
    (:func:`check_model_file`)."""
    text = src.source.strip()
    local = Path(text).expanduser()
    if local.is_file():
        if src.sha256 and sha256_of(local) != src.sha256.lower():
            raise ModelError(f"{local}: sha256 mismatch (expected {src.sha256.lower()}, got {sha256_of(local)})")
        return local
    url = _remote_url(text)
    dest = cache / _cache_name(text, src.sha256)
    if dest.is_file():  # checked before it entered (and, when pinned, its hash once more)
        if not src.sha256 or sha256_of(dest) == src.sha256.lower():
            return dest
        dest.unlink()
    incoming = cache / ".incoming" / dest.name  # its .part resumes across starts
    log.info("%s: fetching %s", src.role, url)
    try:
        got = download(url, incoming, sha256=src.sha256, progress=False, deadline=deadline_s,
                       on_progress=progress.download_reporter(src.role) if progress else None)
    except DownloadError as e:
        if "HTML page" in str(e) and drive_url(text):
            e = e.with_hint("Google Drive answers with an HTML page when the file is not shared "
                            "'anyone with the link' or its download quota is used up")
        raise ModelError(str(e).replace("\n", ";")) from None
    try:
        check_model_file(got, allow_pickle)
    except BrokenModel as e:
        got.unlink(missing_ok=True)
        raise BrokenModel(f"{url} did not send a model, so nothing was cached ({e})") from None
    os.replace(got, dest)
    return dest


def check_model_file(path: Path, allow_pickle: bool) -> None:
    """Raise :class:`BrokenModel` unless ``path`` is an ONNX file that ONNX
    Runtime loads and that carries a bbc1k description (or, with
    ``allow_pickle``, a pickle, which cannot be checked without running it)."""
    if is_pickle(path):
        if allow_pickle:
            return
        raise BrokenModel("a pickle (fastai .pkl), refused: unpickling runs code; serve the .onnx export "
                          "(or pass --allow-pickle for a file you trust)")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only: does it load?
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BrokenModel(f"not a model ONNX Runtime can load: {type(e).__name__}: {str(e)[:200]}") from None
    read_meta(session, path)


def is_pickle(path: Path) -> bool:
    """fastai's learn.export() writes a torch.save zip (or a plain pickle)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_meta(session: Any, path: Path) -> ModelMeta:
    """The bbc1k description an ONNX Runtime session's model carries; BrokenModel without one."""
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise BrokenModel(f"{path}: no '{META_KEY}' description in the ONNX metadata; export it with bbc1k.export")
    try:
        return ModelMeta.from_json(props[META_KEY])
    except (ValueError, TypeError) as e:
        raise BrokenModel(f"{path}: bad bbc1k description ({e})") from None
