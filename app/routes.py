"""The web routes over a :class:`~app.service.Service`: the page, ``/analyze``,
the health and readiness probes, the metrics and the model list. Bad uploads
get a 4xx with a JSON message (:mod:`app.errors`); overload is answered per
request (503 + Retry-After) while ``/readyz`` stays 200; every answer carries
the security headers (:mod:`app.headers`)."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.batching import QueueFull
from app.config import Settings
from app.errors import error_response, image_error_status
from app.headers import SecurityHeadersMiddleware
from app.metrics import MetricsMiddleware
from app.service import Service
from app.uploads import DRAIN_TIMEOUT_S, UploadError, drain, read_upload
from bbc1k.serving.decode import ImageError

log = logging.getLogger("bbc1k.serve")
STATIC = Path(__file__).resolve().parent / "static"


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    """Alive, and honest about the start: 503 once loading failed or outlived LOAD_TIMEOUT."""
    status, body = request.app.state.svc.health()
    return JSONResponse(body, status_code=status)


async def readyz(request: Request) -> Response:
    svc: Service = request.app.state.svc
    if svc.draining:
        return JSONResponse({"ready": False, "error": "shutting down"}, status_code=503)
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


def _busy(svc: Service) -> Response | None:
    if svc.in_progress < svc.settings.max_queue:
        return None
    svc.metrics.rejected.labels("busy").inc()
    return error_response(503, "the server is busy; try again in a moment", retry_after=1)


async def _refuse_upload(request: Request, svc: Service, e: UploadError) -> Response:
    s = svc.settings
    svc.metrics.rejected.labels(f"upload_{e.status}").inc()
    close = e.close
    if e.drain:  # the client hears the error instead of a reset, unless it stalls
        close = not await drain(request, s.max_upload_bytes, min(DRAIN_TIMEOUT_S, s.upload_timeout_s))
    return error_response(e.status, e.message, close=close)


async def analyze(request: Request) -> Response:
    svc: Service = request.app.state.svc
    s = svc.settings
    started = time.perf_counter()
    if not svc.ready:
        return error_response(503, "the models are still loading; try again shortly", retry_after=2)
    if not svc.models:
        return error_response(503, "no model is configured on this server")
    try:
        tasks = svc.parse_tasks(request.query_params.get("tasks"))
    except ValueError as e:
        return error_response(400, str(e))
    if (busy := _busy(svc)) is not None:  # before reading: a busy server need not read the body
        return busy
    # The upload is read without a queue slot, under its own deadline: slow
    # uploads cannot starve the analysis of the ones that have arrived.
    try:
        data = await read_upload(request, s.max_upload_bytes, s.upload_timeout_s)
    except UploadError as e:
        return await _refuse_upload(request, svc, e)
    if (busy := _busy(svc)) is not None:
        return busy
    svc.in_progress += 1
    svc.metrics.in_progress.inc()
    uploaded = time.perf_counter()
    try:
        left = s.request_timeout_s - (uploaded - started)
        body = await asyncio.wait_for(svc.analyze(data, tasks), max(left, 0.001))
        body["timings_ms"]["upload"] = round((uploaded - started) * 1000, 2)
        return JSONResponse(body)
    except ImageError as e:
        status = image_error_status(e)
        svc.metrics.rejected.labels(f"image_{status}").inc()
        return error_response(status, str(e))
    except QueueFull as e:
        svc.metrics.rejected.labels("queue_full").inc()
        return error_response(503, f"the server is busy ({e}); try again in a moment", retry_after=1)
    except TimeoutError:
        svc.metrics.rejected.labels("timeout").inc()
        return error_response(504, f"the analysis took longer than {s.request_timeout_s:g} s")
    finally:
        svc.in_progress -= 1
        svc.metrics.in_progress.dec()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    # exc.headers: e.g. the Allow of a 405
    return error_response(exc.status_code, exc.detail or "error", headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return error_response(500, "internal error; see the server log")


def create_app(settings: Settings) -> Starlette:
    """The web app; its :class:`Service` (``app.state.svc``) loads the models once the server starts."""
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
    app.add_middleware(SecurityHeadersMiddleware)
    return app
