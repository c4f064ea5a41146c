"""Read the uploaded file of a multipart request, within a size limit that is
checked on the Content-Length header and on the bytes actually received."""
from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

FIELD = "file"  # the field name the 2020 client sends


class UploadError(Exception):
    def __init__(self, status: int, message: str, *, drain: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.drain = drain  # the client may still be sending: read the rest before answering


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


async def drain(request: Request, cap: int) -> None:
    """Read and drop up to ``cap`` more body bytes, so that a client still
    sending hears the error instead of a reset connection."""
    dropped = 0
    try:
        while dropped <= cap:
            message = await request.receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
    except Exception:  # the client went away: nothing to drain
        return


async def read_upload(request: Request, limit: int) -> bytes:
    """The bytes of the one ``file`` field; raises :class:`UploadError`."""
    mb = limit / (1024 * 1024)
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise UploadError(400, "bad Content-Length header")
        if int(length) > limit:
            raise UploadError(413, f"the upload is larger than {mb:g} MB")
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UploadError(415, f"send the image as multipart/form-data in a field named '{FIELD}' "
                               f"(got Content-Type {ctype or 'none'!r})")
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
