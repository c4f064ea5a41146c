"""The web routes over a :class:`~app.service.Service`: the page, ``/analyze``,
the health and readiness probes, the metrics and the model list. Bad uploads
get a 4xx with a JSON message (:mod:`app.errors`)."""
from __future__ import annotations

import asyncio
import logging
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
from app.metrics import MetricsMiddleware
from app.service import Service
from app.uploads import UploadError, drain
from bbc1k.serving.decode import ImageError

log = logging.getLogger("bbc1k.serve")
STATIC = Path(__file__).resolve().parent / "static"
DRAIN_TIMEOUT_S = 5.0


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
        return error_response(503, "the models are still loading; try again shortly", retry_after=2)
    if not svc.models:
        return error_response(503, "no model is configured on this server")
    try:
        tasks = svc.parse_tasks(request.query_params.get("tasks"))
    except ValueError as e:
        return error_response(400, str(e))
    if svc.in_progress >= s.max_queue:
        svc.metrics.rejected.labels("busy").inc()
        return error_response(503, "the server is busy; try again in a moment", retry_after=1)
    svc.in_progress += 1
    svc.metrics.in_progress.inc()
    try:
        return JSONResponse(await asyncio.wait_for(svc.analyze(request, tasks), s.request_timeout_s))
    except UploadError as e:
        svc.metrics.rejected.labels(f"upload_{e.status}").inc()
        if e.drain:
            await asyncio.wait_for(drain(request, s.max_upload_bytes), DRAIN_TIMEOUT_S)
        return error_response(e.status, e.message)
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
    return error_response(exc.status_code, exc.detail or "error")


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
    return app
