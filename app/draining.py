"""uvicorn's server with a drain before its graceful shutdown.

Behind a load balancer, a replica that closes its connections as soon as it
gets SIGTERM races the balancer: a request sent on a pooled connection at that
moment is reset, and HAProxy 2.6 cannot resend a request whose connection was
reset after it went out. So on the first SIGTERM or SIGINT the server keeps
serving for ``drain_s`` while ``/readyz`` answers 503 (the balancer's health
check takes it out and it sends nothing more), then shuts down as uvicorn
does: in-flight requests get ``--shutdown-timeout``. A second signal ends the
drain at once.
"""
from __future__ import annotations

import logging
import threading
from types import FrameType

import uvicorn

from app.service import Service

log = logging.getLogger("bbc1k.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, svc: Service, drain_s: float):
        super().__init__(config)
        self.svc = svc
        self.drain_s = drain_s
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._timer is not None or self.drain_s <= 0 or not self.svc.ready:
            if self._timer is not None:
                self._timer.cancel()
            super().handle_exit(sig, frame)
            return
        self.svc.draining = True
        log.info("draining for %g s: /readyz answers 503 while requests are still served", self.drain_s)
        # uvicorn's loop checks should_exit every 0.1 s; setting it from this thread is what the handler does too
        self._timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        self._timer.daemon = True
        self._timer.start()
