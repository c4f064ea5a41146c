"""The server's settings: command-line flags, each with an environment variable
as its default (so a container is configured by env vars alone)."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from bbc1k.serving.decode import DEFAULT_MAX_PIXELS, DEFAULT_WORK_SIDE

ROLES = ("classifier", "detector", "segmenter")


@dataclass
class ModelSource:
    role: str  # classifier, detector or segmenter
    source: str  # local path, https URL, or Google Drive link / id
    sha256: str | None = None


@dataclass
class Settings:
    host: str = "0.0.0.0"
    port: int = 5000
    models: tuple[ModelSource, ...] = ()
    model_cache: Path = Path("~/.cache/bbc1k/models").expanduser()
    models_dir: Path | None = None  # .onnx files here fill the roles not set, by their task
    allow_pickle: bool = False
    quantize: bool = False
    max_batch: int = 8
    segment_max_batch: int = 2  # a U-Net's full-resolution activations are ~10x a classifier's
    max_wait_ms: float = 5.0
    max_queue: int = 64
    request_timeout_s: float = 30.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_side: int = DEFAULT_WORK_SIDE
    threads: int | None = None  # ONNX Runtime intra-op threads; None: the CPUs this process may use
    log_level: str = "info"

    @property
    def optimized_cache(self) -> Path:
        """Where ONNX Runtime's optimised graphs are kept, so later starts skip optimising."""
        return self.model_cache / "ort-optimized"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="bbc1k inference server")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the page and the /analyze API",
                       description="Each flag defaults to the environment variable named in its help.")
    s.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="HOST (default 0.0.0.0)")
    s.add_argument("--port", type=int, default=int(_env("PORT", "5000")), help="PORT (default 5000)")
    for role in ROLES:
        env = role.upper()
        s.add_argument(f"--{role}", default=_env(env),
                       help=f"{env}: local path, https URL or Google Drive link/id of the {role} model")
        s.add_argument(f"--{role}-sha256", default=_env(f"{env}_SHA256"), help=f"{env}_SHA256: expected SHA-256")
    s.add_argument("--model-cache", default=_env("MODEL_CACHE", "~/.cache/bbc1k/models"),
                   help="MODEL_CACHE: where fetched models are kept (default ~/.cache/bbc1k/models)")
    s.add_argument("--models-dir", default=_env("MODELS_DIR"),
                   help="MODELS_DIR: a folder of exported .onnx files; each fills the role its task fits, "
                        "unless that role is set explicitly")
    s.add_argument("--allow-pickle", action="store_true", default=_env("ALLOW_PICKLE", "0") == "1",
                   help="ALLOW_PICKLE=1: accept fastai .pkl models (unpickling runs code: trusted files only)")
    s.add_argument("--quantize", action="store_true", default=_env("QUANTIZE", "0") == "1",
                   help="QUANTIZE=1: serve int8-quantised ONNX models (made once and cached; needs the onnx package)")
    s.add_argument("--max-batch", type=int, default=int(_env("MAX_BATCH", "8")), help="MAX_BATCH (default 8)")
    s.add_argument("--segment-max-batch", type=int, default=int(_env("SEGMENT_MAX_BATCH", "2")),
                   help="SEGMENT_MAX_BATCH: largest batch for the segmenter, whose activations are "
                        "large (default 2)")
    s.add_argument("--max-wait-ms", type=float, default=float(_env("MAX_WAIT_MS", "5")),
                   help="MAX_WAIT_MS: how long a batch waits to fill (default 5)")
    s.add_argument("--max-queue", type=int, default=int(_env("MAX_QUEUE", "64")),
                   help="MAX_QUEUE: requests in progress before new ones get 503 (default 64)")
    s.add_argument("--request-timeout", type=float, default=float(_env("REQUEST_TIMEOUT", "30")),
                   help="REQUEST_TIMEOUT: seconds before a request gets 504 (default 30)")
    s.add_argument("--max-upload-mb", type=float, default=float(_env("MAX_UPLOAD_MB", "10")),
                   help="MAX_UPLOAD_MB: largest request body (default 10)")
    s.add_argument("--max-pixels", type=int, default=int(_env("MAX_PIXELS", str(DEFAULT_MAX_PIXELS))),
                   help=f"MAX_PIXELS: largest image accepted (default {DEFAULT_MAX_PIXELS:,})")
    s.add_argument("--threads", type=int, default=int(_env("THREADS", "0")),
                   help="THREADS: ONNX Runtime threads (default 0: the CPUs this process may use)")
    s.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), help="LOG_LEVEL (default info)")
    q = sub.add_parser("quantize", help="write an int8 copy of an exported .onnx model (needs the onnx package)")
    q.add_argument("src", help="exported .onnx model")
    q.add_argument("dst", help="where to write the int8 model")
    return p


def settings_from_args(ns: argparse.Namespace) -> Settings:
    if ns.command != "serve":
        return Settings()
    for name in ("max_batch", "segment_max_batch", "max_queue"):
        if getattr(ns, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if ns.max_wait_ms < 0 or ns.request_timeout <= 0 or ns.max_upload_mb <= 0:
        raise SystemExit("--max-wait-ms must be >= 0; --request-timeout and --max-upload-mb must be > 0")
    models = tuple(ModelSource(role, getattr(ns, role), getattr(ns, f"{role}_sha256"))
                   for role in ROLES if getattr(ns, role))
    return Settings(
        host=ns.host, port=ns.port, models=models,
        model_cache=Path(ns.model_cache).expanduser(),
        models_dir=Path(ns.models_dir).expanduser() if ns.models_dir else None,
        allow_pickle=ns.allow_pickle, quantize=ns.quantize,
        max_batch=ns.max_batch, segment_max_batch=ns.segment_max_batch, max_wait_ms=ns.max_wait_ms,
        max_queue=ns.max_queue,
        request_timeout_s=ns.request_timeout, max_upload_bytes=int(ns.max_upload_mb * 1024 * 1024),
        max_pixels=ns.max_pixels, threads=ns.threads or None, log_level=ns.log_level,
    )
