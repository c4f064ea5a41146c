"""The server's settings: command-line flags, each with an environment variable
as its default (so a container is configured by env vars alone), all checked
at start: a value out of its range stops the server with one line naming it."""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from bbc1k.serving.decode import DEFAULT_MAX_PIXELS, DEFAULT_WORK_SIDE

ROLES = ("classifier", "detector", "segmenter")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
MAX_HEADER_BYTES = 64 * 1024
"""Request line and headers larger than this are refused (431): browsers send a few KB."""


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
    float32: bool = False  # serve X.onnx even where its int8 copy X.int8.onnx lies beside it
    max_batch: int = 8
    segment_max_batch: int = 2  # a U-Net's full-resolution activations are ~10x a classifier's
    max_wait_ms: float = 5.0
    max_queue: int = 64
    request_timeout_s: float = 30.0
    upload_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    shutdown_timeout_s: float = 5.0
    drain_s: float = 0.0  # after SIGTERM, /readyz is 503 this long before the server stops taking requests
    load_timeout_s: float = 600.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_side: int = DEFAULT_WORK_SIDE
    threads: int | None = None  # ONNX Runtime intra-op threads; None: the CPUs this process may use
    log_level: str = "info"

    @property
    def optimized_cache(self) -> Path:
        """Where ONNX Runtime's optimised graphs are kept, so later starts skip optimising."""
        return self.model_cache / "ort-optimized"


class SettingsError(ValueError):
    """Settings the server cannot start with; ``lines``: one per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Number:
    """A numeric setting: its flag, variable, default and the range it must lie in."""

    flag: str
    env: str
    default: float
    lo: float
    hi: float
    whole: bool
    help: str
    unit: str = ""

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def _num(flag: str, env: str, default: float, lo: float, hi: float, help: str, unit: str = "",
         whole: bool = True) -> Number:
    return Number(flag, env, default, lo, hi, whole, help, unit)


NUMBERS = (
    _num("--port", "PORT", 5000, 1, 65535, "where to listen"),
    _num("--max-batch", "MAX_BATCH", 8, 1, 256, "largest batch per forward pass"),
    _num("--segment-max-batch", "SEGMENT_MAX_BATCH", 2, 1, 64,
         "largest batch for the segmenter, whose activations are large"),
    _num("--max-wait-ms", "MAX_WAIT_MS", 5, 0, 10_000, "how long a batch waits to fill", "ms", whole=False),
    _num("--max-queue", "MAX_QUEUE", 64, 1, 4096, "requests being analysed before new ones get 503"),
    _num("--request-timeout", "REQUEST_TIMEOUT", 30, 0.1, 600, "seconds a request may take, upload "
         "included, before it gets 504", "s", whole=False),
    _num("--upload-timeout", "UPLOAD_TIMEOUT", 10, 0.1, 600, "seconds the upload may take to arrive "
         "(then 408); at most REQUEST_TIMEOUT", "s", whole=False),
    _num("--header-timeout", "HEADER_TIMEOUT", 10, 0.1, 120, "seconds a connection may take to send its "
         "request line and headers before it is closed", "s", whole=False),
    _num("--shutdown-timeout", "SHUTDOWN_TIMEOUT", 5, 0, 60, "seconds requests in progress get to finish "
         "after SIGTERM (docker stop kills at 10)", "s", whole=False),
    _num("--drain", "DRAIN", 0, 0, 60, "seconds after SIGTERM during which /readyz answers 503 and requests are "
         "still served, so a load balancer takes this replica out first (behind HAProxy: 3)", "s", whole=False),
    _num("--load-timeout", "LOAD_TIMEOUT", 600, 1, 86400, "seconds fetching and loading the models may take "
         "before the server gives up (exit 1)", "s", whole=False),
    _num("--max-upload-mb", "MAX_UPLOAD_MB", 10, 0.01, 1024, "largest request body", "MB", whole=False),
    _num("--max-pixels", "MAX_PIXELS", DEFAULT_MAX_PIXELS, 65_536, 250_000_000, "largest image accepted"),
    _num("--threads", "THREADS", 0, 0, 1024, "ONNX Runtime threads (0: the CPUs this process may use)"),
)
FLAGS = {
    "--allow-pickle": ("ALLOW_PICKLE", "accept fastai .pkl models (unpickling runs code: trusted files only)"),
    "--float32": ("FLOAT32", "serve the float32 models even where an int8 copy (X.int8.onnx beside X.onnx) "
                             "is there"),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v == int(v) else f"{v:g}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="bbc1k inference server")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the page and the /analyze API",
                       description="Each flag defaults to the environment variable named in its help.")
    s.add_argument("--host", default=None, help="HOST (default 0.0.0.0)")
    for role in ROLES:
        env = role.upper()
        s.add_argument(f"--{role}", default=None,
                       help=f"{env}: local path, https URL or Google Drive link/id of the {role} model")
        s.add_argument(f"--{role}-sha256", default=None, help=f"{env}_SHA256: expected SHA-256")
    s.add_argument("--model-cache", default=None,
                   help="MODEL_CACHE: where fetched models are kept (default ~/.cache/bbc1k/models)")
    s.add_argument("--models-dir", default=None,
                   help="MODELS_DIR: a folder of exported .onnx files; each fills the role its task fits, "
                        "unless that role is set explicitly")
    for flag, (env, text) in FLAGS.items():
        s.add_argument(flag, action="store_true", default=None, help=f"{env}=1: {text}")
    for n in NUMBERS:
        unit = f" {n.unit}" if n.unit else ""
        s.add_argument(n.flag, default=None, metavar=n.env,
                       help=f"{n.env}: {n.help} (default {_fmt(n.default)}{unit}; {_fmt(n.lo)} to {_fmt(n.hi)})")
    s.add_argument("--log-level", default=None, help=f"LOG_LEVEL: {', '.join(LOG_LEVELS)} (default info)")
    q = sub.add_parser("quantize", help="write an int8 copy of an exported .onnx model (needs the onnx package)")
    q.add_argument("src", help="exported .onnx model")
    q.add_argument("dst", help="where to write the int8 model")
    q.add_argument("--images", default=None, metavar="DIR",
                   help="calibrate on these photos (one subfolder per class, or a folder of images); "
                        "default: synthetic bbc1k photos")
    return p


def _number(n: Number, given: str | None, problems: list[str]) -> float:
    source, text = (n.flag, given) if given is not None else (n.env, _env(n.env))
    if text is None:
        return n.default
    kind = "a whole number" if n.whole else "a number"
    try:
        value = int(text) if n.whole else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not n.lo <= value <= n.hi:
        unit = f" {n.unit}" if n.unit else ""
        problems.append(f"{source}={text[:40]!r}: must be {kind} from {_fmt(n.lo)} to {_fmt(n.hi)}{unit}")
        return n.default
    return value


def _flag(flag: str, given: bool | None, problems: list[str]) -> bool:
    env = FLAGS[flag][0]
    if given:
        return True
    text = (_env(env) or "").strip().lower()
    if text not in _TRUE + _FALSE:
        problems.append(f"{env}={text[:40]!r}: must be 1 or 0")
    return text in _TRUE


def _text(ns: argparse.Namespace, dest: str, env: str, default: str | None = None) -> str | None:
    given = getattr(ns, dest)
    return given if given is not None else _env(env, default)


def _check(problems: list[str], ok: bool, line: str) -> None:
    if not ok:
        problems.append(line)


def settings_from_args(ns: argparse.Namespace) -> Settings:
    """The settings of ``serve``, every value checked; raises :class:`SettingsError`
    with one line per problem."""
    if ns.command != "serve":
        return Settings()
    problems: list[str] = []
    v: dict[str, float] = {n.dest: _number(n, getattr(ns, n.dest), problems) for n in NUMBERS}
    flags = {f[2:].replace("-", "_"): _flag(f, getattr(ns, f[2:].replace("-", "_")), problems) for f in FLAGS}
    models = []
    for role in ROLES:
        env = role.upper()
        source = _text(ns, role, env)
        digest = _text(ns, f"{role}_sha256", f"{env}_SHA256")
        if digest is not None:
            digest = digest.strip().lower()
            _check(problems, len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
                   f"{env}_SHA256={digest[:80]!r}: must be 64 hexadecimal digits")
            _check(problems, source is not None, f"{env}_SHA256 is set but {env} is not")
        if source:
            models.append(ModelSource(role, source, digest))
    log_level = (_text(ns, "log_level", "LOG_LEVEL", "info") or "info").lower()
    _check(problems, log_level in LOG_LEVELS, f"LOG_LEVEL={log_level[:40]!r}: must be one of {', '.join(LOG_LEVELS)}")
    given_upload = ns.upload_timeout is not None or _env("UPLOAD_TIMEOUT") is not None
    if not given_upload:  # by default well under the request timeout
        v["upload_timeout"] = min(v["upload_timeout"], v["request_timeout"] / 3)
    _check(problems, v["upload_timeout"] <= v["request_timeout"],
           f"UPLOAD_TIMEOUT={v['upload_timeout']:g}: must not exceed REQUEST_TIMEOUT={v['request_timeout']:g}")
    if problems:
        raise SettingsError(problems)
    models_dir = _text(ns, "models_dir", "MODELS_DIR")
    return Settings(
        host=_text(ns, "host", "HOST", "0.0.0.0"), port=int(v["port"]), models=tuple(models),
        model_cache=Path(_text(ns, "model_cache", "MODEL_CACHE", "~/.cache/bbc1k/models")).expanduser(),
        models_dir=Path(models_dir).expanduser() if models_dir else None,
        allow_pickle=flags["allow_pickle"], float32=flags["float32"],
        max_batch=int(v["max_batch"]), segment_max_batch=int(v["segment_max_batch"]),
        max_wait_ms=v["max_wait_ms"], max_queue=int(v["max_queue"]),
        request_timeout_s=v["request_timeout"], upload_timeout_s=v["upload_timeout"],
        header_timeout_s=v["header_timeout"], shutdown_timeout_s=v["shutdown_timeout"],
        drain_s=v["drain"],
        load_timeout_s=v["load_timeout"], max_upload_bytes=int(v["max_upload_mb"] * 1024 * 1024),
        max_pixels=int(v["max_pixels"]), threads=int(v["threads"]) or None, log_level=log_level,
    )

