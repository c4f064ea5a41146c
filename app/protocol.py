"""uvicorn's httptools protocol with two bounds it lacks: the size of a
request's line and headers (431 past it) and the time a connection may take
to send them (closed past it). Without them a client may hold a connection
open forever without a word, or grow the server by sending megabytes of
header that the parser buffers whole. Imported by app.server once the models
are loading (uvicorn's import overlaps with theirs)."""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import MAX_HEADER_BYTES

_END_OF_HEAD = b"\r\n\r\n"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that counts the bytes of each request's head
    and closes a connection whose head does not arrive within
    ``header_timeout`` seconds (see :func:`configure`)."""

    max_header_bytes: int = MAX_HEADER_BYTES

    def __init__(self, *args: Any, header_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._head_bytes = 0
        self._in_head = True  # the next bytes belong to a request line and headers
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never speaks is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_timer is None:  # a keep-alive connection starts its next request
                self._arm_head_timer()
            end = data.find(_END_OF_HEAD)
            self._head_bytes += len(data) if end < 0 else end + len(_END_OF_HEAD)
            if self._head_bytes > self.max_header_bytes:
                self._refuse_head()
                return
        super().data_received(data)

    # httptools' callbacks, while the bytes are fed
    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head waits for the answer in progress: its time starts after
            return
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes:
                self._send_and_close(408, b"the request line and headers took too long to arrive")
            else:
                self.transport.close()

    def _refuse_head(self) -> None:
        self._cancel_head_timer()
        self._in_head = False
        self._send_and_close(431, b"request line and headers larger than %d bytes" % self.max_header_bytes)

    def _send_and_close(self, status: int, message: bytes) -> None:
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (status, reason, len(message), message))
        self.transport.close()


def configure(header_timeout: float) -> Callable[..., GuardedHttpToolsProtocol]:
    """What uvicorn's ``http=`` takes (it calls it with the connection's
    arguments): the guarded protocol with this header timeout."""
    return functools.partial(GuardedHttpToolsProtocol, header_timeout=header_timeout)
