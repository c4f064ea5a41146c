"""The bbc1k inference server's command line: a page and a JSON API over the exported models.

    python -m app serve [--host 0.0.0.0] [--port 5000] [--classifier PATH|URL] ...
    python app/server.py serve ...          (the same)
    python -m app quantize IN.onnx OUT.onnx [--images DIR]

Every flag has an environment variable (``python -m app serve --help``); each
is checked at start and a bad one stops the server with one line naming it.
Routes (:mod:`app.routes`): ``GET /`` the page, ``POST /analyze`` (multipart
field ``file``; ``?tasks=classify,detect,segment``), ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /api/models``. The
request pipeline is :class:`app.service.Service`.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from PIL import Image

from app.config import Settings, SettingsError, build_parser, settings_from_args
from app.routes import create_app
from app.service import Service

log = logging.getLogger("bbc1k.serve")
ERROR_PREFIX = "bbc1k-serve: error:"
"""Every line that explains why the server stops starts with this."""


def serve(settings: Settings) -> int:
    """Serve until stopped; the exit status is 1 when the models could not be loaded."""
    app = create_app(settings)
    svc: Service = app.state.svc
    svc.start_loading()  # ONNX Runtime loads the models while the web server is imported and started
    import uvicorn

    from app.draining import DrainingServer
    from app.protocol import configure

    # Pillow refuses (DecompressionBombError) above twice this; decode_image refuses above it.
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, server_header=False, timeout_keep_alive=5,
                            http=configure(settings.header_timeout_s),
                            # docker stop kills after 10 s: requests in progress get this long, then go
                            timeout_graceful_shutdown=settings.shutdown_timeout_s)
    server = DrainingServer(config, svc, settings.drain_s)

    def stop() -> None:
        server.should_exit = True

    svc.on_fatal = stop
    server.run()
    return 1 if svc.failure else 0


def quantize_command(src: str, dst: str, images: str | None) -> int:
    from bbc1k.quantize import QuantizeError, image_files, quantize

    calibration = image_files(images) if images else None
    if calibration is not None and not calibration:
        log.error("%s no images in %s", ERROR_PREFIX, images)
        return 2
    try:
        out = quantize(Path(src), Path(dst), calibration)
    except QuantizeError as e:
        log.error("%s %s", ERROR_PREFIX, e)
        return 1
    log.info("wrote %s", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``serve`` or ``quantize``, as ``argv`` says; returns the exit status."""
    ns = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(ns)
    except SettingsError as e:
        for line in e.lines:
            print(f"{ERROR_PREFIX} {line}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if ns.command == "quantize":
        return quantize_command(ns.src, ns.dst, ns.images)
    if os.environ.get("QUANTIZE"):
        log.warning("QUANTIZE is no longer read: export writes an int8 copy beside each model and the "
                    "server serves it (FLOAT32=1 serves the float32 models)")
    return serve(settings)


def run() -> int:
    """The process entry point of ``python -m app`` and ``python app/server.py``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # ONNX Runtime sets its own pool; keep numpy's BLAS small
    return main()


if __name__ == "__main__":
    sys.exit(run())
