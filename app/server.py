"""The bbc1k inference server: a page and a JSON API over the exported models.

    python app/server.py serve [--host 0.0.0.0] [--port 5000] [--classifier PATH|URL] ...

Every flag has an environment variable (``python app/server.py serve --help``).
Routes: ``GET /`` the page, ``POST /analyze`` (multipart field ``file``;
``?tasks=classify,detect,segment``), ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus), ``GET /api/models``.

Requests are decoded in worker threads, batched per model
(:mod:`app.batching`) and run in one inference thread, so the event loop only
moves bytes. Bad uploads get a 4xx with a JSON message.
"""
from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.batching import MicroBatcher, QueueFull
from app.config import Settings, build_parser, settings_from_args
from app.metrics import Metrics, MetricsMiddleware
from app.models import ModelError, ServedModel, load_all
from app.uploads import UploadError, drain, read_upload
from bbc1k.inference import (MASK_COLOURS, ImageError, box_to_image, cpu_count, decode_image,
                             mask_to_image, png_base64, probabilities)

log = logging.getLogger("bbc1k.serve")
STATIC = Path(__file__).resolve().parent / "static"
TASKS = ("classify", "detect", "segment")
DRAIN_TIMEOUT_S = 5.0


def _error(status: int, message: str, *, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _hex(rgb: tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


@dataclass(frozen=True)
class UploadInfo:
    """What the answer needs of a decoded upload once its pixels are dropped."""

    width: int
    height: int
    format: str
    scale: tuple[float, float]  # decoded image pixels to upload pixels (x, y)


class Service:
    """The loaded models, their batchers and the request pipeline."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        self.ready = False
        self.failure: str | None = None
        self.in_progress = 0
        self.on_fatal = lambda: None  # set by main(): stops the server
        workers = cpu_count()
        self.decode_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        # One inference thread: ONNX Runtime already uses every CPU inside one run.
        self.infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._loading: Future | None = None
        self._started = time.perf_counter()

    # ---- start-up -------------------------------------------------------
    def start_loading(self) -> None:
        """Start loading the models in a thread (once): serve() calls it before
        importing and starting the web server, so the two overlap."""
        if self._loading is None:
            self._started = time.perf_counter()
            loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
            self._loading = loader.submit(load_all, self.settings)
            loader.shutdown(wait=False)

    async def load(self) -> None:
        self.start_loading()
        try:
            models = await asyncio.wrap_future(self._loading)
        except ModelError as e:
            self.failure = str(e)
            log.error("bbc1k-serve: error: %s", self.failure)
            self.on_fatal()
            return
        except Exception as e:  # anything else while loading is fatal too, and said in one line
            self.failure = f"loading the models failed ({type(e).__name__}: {e})".replace("\n", "; ")
            log.error("bbc1k-serve: error: %s", self.failure)
            self.on_fatal()
            return
        s = self.settings
        for role, model in models.items():
            if model.kind == "pickle":
                max_batch = 1  # the 2020 design: learn.predict on one image
            else:
                max_batch = min(s.max_batch, s.segment_max_batch) if role == "segmenter" else s.max_batch
            b = MicroBatcher(role, model.run, self.infer_pool, max_batch=max_batch,
                             max_wait_s=s.max_wait_ms / 1000, max_queue=s.max_queue,
                             on_batch=self.metrics.on_batch, on_depth=self.metrics.on_depth)
            b.start()
            self.batchers[role] = b
        self.models = models
        _release_free_heap()  # what parsing and optimising the models freed
        _bound_heap()  # from now on: set after loading, whose many weight buffers it would slow down
        self.ready = True
        if not models:
            log.warning("no model configured (set CLASSIFIER, DETECTOR and/or SEGMENTER); /analyze answers 503")
        log.info("ready in %.2f s: tasks %s", time.perf_counter() - self._started, ", ".join(self.tasks()) or "none")

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=False, cancel_futures=True)

    # ---- which models serve which task ------------------------------------
    def _classify_role(self) -> str | None:
        if "classifier" in self.models:
            return "classifier"
        det = self.models.get("detector")
        return "detector" if det and det.meta.output("class_logits") else None

    def tasks(self) -> list[str]:
        on = {"classify": self._classify_role() is not None, "detect": "detector" in self.models,
              "segment": "segmenter" in self.models}
        return [t for t in TASKS if on[t]]

    def parse_tasks(self, text: str | None) -> list[str]:
        enabled = self.tasks()
        if not text:
            return enabled
        asked = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in asked if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        off = [t for t in asked if t not in enabled]
        if off:
            raise ValueError(f"task(s) {', '.join(off)} not available: no model loaded for them "
                             f"(available: {', '.join(enabled) or 'none'})")
        return [t for t in TASKS if t in asked]

    def _roles_for(self, tasks: list[str]) -> list[str]:
        roles = []
        if "classify" in tasks:
            roles.append(self._classify_role())
        if "detect" in tasks:
            roles.append("detector")
            if not self.models["detector"].meta.output("class_logits") and self._classify_role():
                roles.append(self._classify_role())  # the box's label comes from the classifier
        if "segment" in tasks:
            roles.append("segmenter")
        return list(dict.fromkeys(roles))

    # ---- the request pipeline ------------------------------------------------
    def _decode_and_prepare(self, data: bytes, roles: list[str]) -> tuple[UploadInfo, dict[str, Any]]:
        decoded = decode_image(data, max_pixels=self.settings.max_pixels, work_side=self.settings.work_side)
        prepared = {r: self.models[r].prepare(decoded.image) for r in roles}
        # Only the model inputs wait in the queues: the decoded pixels (up to 3 MB) are dropped now.
        return UploadInfo(decoded.width, decoded.height, decoded.format, decoded.scale), prepared

    async def analyze(self, request: Request, tasks: list[str]) -> dict[str, Any]:
        t0 = time.perf_counter()
        data = await read_upload(request, self.settings.max_upload_bytes)
        loop = asyncio.get_running_loop()
        roles = self._roles_for(tasks)
        decoded, prepared = await loop.run_in_executor(self.decode_pool, self._decode_and_prepare, data, roles)
        del data
        t1 = time.perf_counter()
        answers = await asyncio.gather(*(self.batchers[r].submit(prepared[r][0]) for r in roles))
        t2 = time.perf_counter()
        outputs = {r: a[0] for r, a in zip(roles, answers)}
        fits = {r: prepared[r][1] for r in roles}
        body = await loop.run_in_executor(self.decode_pool, self._answer, decoded, tasks, outputs, fits)
        body["timings_ms"] = {
            "decode": round((t1 - t0) * 1000, 2), "models": round((t2 - t1) * 1000, 2),
            "total": round((time.perf_counter() - t0) * 1000, 2),
            **{r: {"queue": a[1].queue_ms, "inference": a[1].inference_ms, "batch_size": a[1].batch_size}
               for r, a in zip(roles, answers)},
        }
        return body

    def _answer(self, decoded: UploadInfo, tasks: list[str], outputs: dict[str, dict[str, np.ndarray]],
                fits: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"image": {"width": decoded.width, "height": decoded.height,
                                          "format": decoded.format}, "tasks": tasks}
        if "classify" in tasks:
            role = self._classify_role()
            meta = self.models[role].meta
            probs = probabilities(outputs[role]["class_logits"], meta.classes)
            label = max(probs, key=probs.get)
            body["classification"] = {"label": label, "confidence": probs[label], "probabilities": probs,
                                      "model": meta.name}
            body["result"] = label  # what the 2020 client reads
        if "detect" in tasks:
            det = self.models["detector"]
            spec = det.meta.output("box")
            box = box_to_image(outputs["detector"]["box"], fits["detector"], decoded.scale,
                               tuple(spec.box_range or (-1.0, 1.0)))
            label, conf = None, None
            label_role = "detector" if det.meta.output("class_logits") else self._classify_role()
            if label_role:
                lp = probabilities(outputs[label_role]["class_logits"], self.models[label_role].meta.classes)
                label = max(lp, key=lp.get)
                conf = lp[label]
            body["detection"] = {"box": box, "box_format": "xyxy", "label": label, "confidence": conf,
                                 "model": det.meta.name}
        if "segment" in tasks:
            seg = self.models["segmenter"]
            mask = mask_to_image(outputs["segmenter"]["mask_logits"], fits["segmenter"])
            counts = np.bincount(np.asarray(mask).ravel(), minlength=len(seg.meta.classes))
            total = max(1, int(counts.sum()))
            body["segmentation"] = {
                "png_base64": png_base64(mask), "width": mask.width, "height": mask.height,
                "classes": seg.meta.classes,
                "colors": [_hex(MASK_COLOURS[i % len(MASK_COLOURS)]) for i in range(len(seg.meta.classes))],
                "fractions": {c: round(int(counts[i]) / total, 5) for i, c in enumerate(seg.meta.classes)},
                "model": seg.meta.name,
            }
        return body


# ---- routes ----------------------------------------------------------------------
async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc: Service = request.app.state.svc
    if svc.ready:
        return JSONResponse({"ready": True, "tasks": svc.tasks()})
    return JSONResponse({"ready": False, "error": svc.failure or "loading models"}, status_code=503,
                        headers={"Retry-After": "2"})


async def metrics(request: Request) -> Response:
    svc: Service = request.app.state.svc
    for name, b in svc.batchers.items():
        svc.metrics.on_depth(name, b.depth)
    return Response(svc.metrics.render(), media_type=svc.metrics.content_type)


async def api_models(request: Request) -> Response:
    svc: Service = request.app.state.svc
    s = svc.settings
    return JSONResponse({
        "ready": svc.ready, "tasks": svc.tasks(),
        "models": [m.describe() for m in svc.models.values()],
        "limits": {"max_upload_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels,
                   "max_batch": s.max_batch, "segment_max_batch": s.segment_max_batch,
                   "max_wait_ms": s.max_wait_ms, "max_queue": s.max_queue,
                   "request_timeout_s": s.request_timeout_s},
    })


async def analyze(request: Request) -> Response:
    svc: Service = request.app.state.svc
    s = svc.settings
    if not svc.ready:
        return _error(503, "the models are still loading; try again shortly", retry_after=2)
    if not svc.models:
        return _error(503, "no model is configured on this server")
    try:
        tasks = svc.parse_tasks(request.query_params.get("tasks"))
    except ValueError as e:
        return _error(400, str(e))
    if svc.in_progress >= s.max_queue:
        svc.metrics.rejected.labels("busy").inc()
        return _error(503, "the server is busy; try again in a moment", retry_after=1)
    svc.in_progress += 1
    svc.metrics.in_progress.inc()
    try:
        return JSONResponse(await asyncio.wait_for(svc.analyze(request, tasks), s.request_timeout_s))
    except UploadError as e:
        svc.metrics.rejected.labels(f"upload_{e.status}").inc()
        if e.drain:
            await asyncio.wait_for(drain(request, s.max_upload_bytes), DRAIN_TIMEOUT_S)
        return _error(e.status, e.message)
    except ImageError as e:
        svc.metrics.rejected.labels(f"image_{e.status}").inc()
        return _error(e.status, str(e))
    except QueueFull as e:
        svc.metrics.rejected.labels("queue_full").inc()
        return _error(503, f"the server is busy ({e}); try again in a moment", retry_after=1)
    except TimeoutError:
        svc.metrics.rejected.labels("timeout").inc()
        return _error(504, f"the analysis took longer than {s.request_timeout_s:g} s")
    finally:
        svc.in_progress -= 1
        svc.metrics.in_progress.dec()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail or "error")


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return _error(500, "internal error; see the server log")


def create_app(settings: Settings) -> Starlette:
    svc = Service(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        loader = asyncio.create_task(svc.load())
        yield
        loader.cancel()
        await svc.close()

    app = Starlette(
        routes=[Route("/", page), Route("/analyze", analyze, methods=["POST"]), Route("/healthz", healthz),
                Route("/readyz", readyz), Route("/metrics", metrics), Route("/api/models", api_models),
                Mount("/static", StaticFiles(directory=STATIC), name="static")],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.svc = svc
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    return app


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's malloc tuning calls; None where they are not glibc's."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: no library search
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _bound_heap() -> None:
    """glibc only: buffers of 1 MiB and more (a batch's activations) are
    mapped and unmapped on their own instead of coming from the heap, whose
    freed space glibc otherwise keeps (three resnet34 models after a few
    batches: 660 MB instead of 510 MB)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD; a fixed value also stops glibc raising it
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD: give back a free heap top above 1 MiB


def _release_free_heap() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def serve(settings: Settings) -> int:
    app = create_app(settings)
    svc: Service = app.state.svc
    svc.start_loading()  # ONNX Runtime loads the models while the web server is imported and started
    import uvicorn

    # Pillow refuses (DecompressionBombError) above twice this; decode_image refuses above it.
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, server_header=False, timeout_keep_alive=5)
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    svc.on_fatal = stop
    server.run()
    return 1 if svc.failure else 0


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    settings = settings_from_args(ns)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if ns.command == "quantize":
        from app.quantize import quantize
        from bbc1k.modelmeta import read_onnx_meta

        out = quantize(Path(ns.src), Path(ns.dst), read_onnx_meta(ns.src))
        log.info("wrote %s", out)
        return 0
    return serve(settings)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # ONNX Runtime sets its own pool; keep numpy's BLAS small
    sys.exit(main())
