"""How the app answers what it refuses: the HTTP status of each upload error
(bbc1k.serving's errors carry none) and the JSON body every error shares."""
from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from bbc1k.serving.decode import BadImage, ImageError, ImageTooLarge, NotAnImage

IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    NotAnImage: 415,  # Unsupported Media Type
    ImageTooLarge: 413,  # Content Too Large
    BadImage: 422,  # Unprocessable Content
}
"""The HTTP status of each kind of unusable upload."""


def image_error_status(error: ImageError) -> int:
    """The status of ``error``: that of its nearest class in
    :data:`IMAGE_ERROR_STATUS`, else 422 (an image that cannot be used)."""
    for cls in type(error).__mro__:
        if cls in IMAGE_ERROR_STATUS:
            return IMAGE_ERROR_STATUS[cls]
    return 422


def error_response(status: int, message: str, *, retry_after: int | None = None, close: bool = False,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": message, "status": status}`` with that status (and ``Retry-After``;
    ``Connection: close`` with ``close``, for a client that may still be sending)."""
    extra = dict(headers or {})
    if retry_after is not None:
        extra["Retry-After"] = str(retry_after)
    if close:
        extra["Connection"] = "close"
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=extra or None)
