"""Read the uploaded file of a multipart request, within a size limit that is
checked on the Content-Length header and on the bytes actually received, and
within a deadline: a body that trickles in is cut off, not waited for."""
from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

FIELD = "file"  # the field name the 2020 client sends
DRAIN_TIMEOUT_S = 5.0
"""At most this long is spent reading the rest of a refused body, so the client hears why."""


class UploadError(Exception):
    def __init__(self, status: int, message: str, *, drain: bool = False, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.drain = drain  # the client may still be sending: read the rest before answering
        self.close = close  # the client may still be sending: answer, then close the connection


class _TooLarge(Exception):
    pass


def _limited(request: Request, limit: int) -> Request:
    """The request with a receive channel that stops past ``limit`` body bytes."""
    received = 0
    receive = request.receive

    async def limited_receive():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge()
        return message

    return Request(request.scope, limited_receive)


async def _drop(request: Request, cap: int) -> bool:
    dropped = 0
    while dropped <= cap:
        message = await request.receive()
        if message["type"] != "http.request":
            return False
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def drain(request: Request, cap: int, timeout: float = DRAIN_TIMEOUT_S) -> bool:
    """Read and drop up to ``cap`` more body bytes within ``timeout`` seconds,
    so that a client still sending hears the error instead of a reset
    connection. False when the body did not end in time (a client that
    stalled, or went away): the answer should then close the connection."""
    try:
        return await asyncio.wait_for(_drop(request, cap), timeout)
    except (TimeoutError, ClientDisconnect, OSError):
        return False


async def _read(request: Request, limit: int) -> bytes:
    mb = limit / (1024 * 1024)
    try:
        form = await _limited(request, limit).form(max_files=4, max_fields=16)
    except _TooLarge:
        raise UploadError(413, f"the upload is larger than {mb:g} MB", drain=True) from None
    except MultiPartException as e:
        raise UploadError(400, f"bad multipart body: {e.message}") from None
    except ClientDisconnect:
        raise UploadError(400, "the client disconnected during the upload") from None
    try:
        files = form.getlist(FIELD)
        if not files:
            raise UploadError(400, f"no file: send the image in a multipart field named '{FIELD}'")
        if len(files) > 1:
            raise UploadError(400, f"send one image per request ({len(files)} '{FIELD}' fields received)")
        upload = files[0]
        if not isinstance(upload, UploadFile):
            raise UploadError(400, f"the '{FIELD}' field must be a file, not text")
        return await upload.read()
    finally:
        await form.close()


async def read_upload(request: Request, limit: int, timeout: float) -> bytes:
    """The bytes of the one ``file`` field, received within ``timeout``
    seconds; raises :class:`UploadError` (408 past the deadline)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise UploadError(400, "bad Content-Length header")
        if int(length) > limit:
            raise UploadError(413, f"the upload is larger than {limit / (1024 * 1024):g} MB")
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UploadError(415, f"send the image as multipart/form-data in a field named '{FIELD}' "
                               f"(got Content-Type {ctype or 'none'!r})")
    try:
        return await asyncio.wait_for(_read(request, limit), timeout)
    except TimeoutError:
        raise UploadError(408, f"the upload did not arrive within {timeout:g} s", close=True) from None
