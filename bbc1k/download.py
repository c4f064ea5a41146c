"""Downloads you can trust: resumable, retried, checked, atomic.

``download(url, dest)`` streams to ``dest.part`` with a tqdm bar, resumes a
partial file with an HTTP Range request, retries transient failures with
exponential backoff, checks the size and SHA-256 when given and only then
renames the file to ``dest``. It uses the standard library (urllib) only, so
the slim serving image can fetch model files with it too.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = ["DownloadError", "download", "drive_url", "is_drive_id", "probe", "sha256_of"]

CHUNK = 1 << 16
BACKOFF_BASE_S = 1.0
"""First retry waits this long, then 2x, 4x... (tests lower it)."""
USER_AGENT = "bbc1k-download/1 (+https://github.com/unccv/deep_learning)"
_HTML_STARTS = (b"<!doctype html", b"<html")


class DownloadError(RuntimeError):
    """A download that failed for good. The message says which URL, what
    happened and what to do; ``problem`` and ``hint`` hold the parts."""

    def __init__(self, url: str, problem: str, hint: str | None = None):
        self.url, self.problem, self.hint = url, problem, hint
        text = f"download of {url} failed: {problem}"
        super().__init__(f"{text}\n  what to do: {hint}" if hint else text)

    def with_hint(self, hint: str) -> DownloadError:
        """The same error with ``hint`` appended to its advice."""
        return DownloadError(self.url, self.problem, f"{self.hint}; {hint}" if self.hint else hint)


class _Transient(Exception):
    """A failure worth another try (connection dropped, 5xx, timeout)."""


class _Restart(Exception):
    """The partial file cannot be continued; start again from byte 0."""


class _Late(Exception):
    """The download's deadline passed; ``args``: bytes received, total (or None)."""


def sha256_of(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_drive_id(text: str) -> bool:
    """Whether ``text`` has the shape of a bare Google Drive file id: a random
    URL-safe token of 25 characters or more (33 today, 28 for old files) that
    mixes upper case, lower case and digits, as a random token does and a
    file or folder name seldom does (``models_final_version_2`` is no id)."""
    return (re.fullmatch(r"[A-Za-z0-9_-]{25,}", text) is not None and any(c.isupper() for c in text)
            and any(c.islower() for c in text) and any(c.isdigit() for c in text))


def drive_url(link_or_id: str) -> str | None:
    """A direct-download URL for a Google Drive share link or bare file id;
    None when ``link_or_id`` is neither."""
    text = link_or_id.strip()
    parsed = urllib.parse.urlparse(text)
    file_id = None
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc.endswith(("drive.google.com", "docs.google.com", "drive.usercontent.google.com")):
            return None
        m = re.search(r"/(?:file/)?d/([\w-]{10,})", parsed.path)
        file_id = m.group(1) if m else (urllib.parse.parse_qs(parsed.query).get("id") or [None])[0]
    elif is_drive_id(text):
        file_id = text
    if not file_id:
        return None
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def probe(url: str, timeout: float = 5.0) -> str | None:
    """None when ``url``'s host answers a TCP connect within ``timeout``,
    else a short reason (DNS failure, refused, timed out). Quick by design:
    it lets a caller fall back at once when offline."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname
    if not host:
        return f"{url!r} is not a URL"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as e:
        return f"DNS lookup of {host} failed ({e.strerror or e}): no network, or the name is wrong"
    except socket.timeout:
        return f"{host}:{port} did not answer within {timeout:g} s"
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or e})"


def _is_html(content_type: str | None, head: bytes) -> bool:
    if content_type and content_type.split(";")[0].strip().lower() == "text/html":
        return True
    return head.lstrip()[:20].lower().startswith(_HTML_STARTS)


def _total_from(resp: http.client.HTTPResponse, offset: int) -> int | None:
    """The whole file's size as the server states it (Content-Range for a 206)."""
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise _Restart()
        return int(m.group(3)) if m.group(3) != "*" else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _definitive(url: str, problem: str, part: Path, hint: str | None = None) -> DownloadError:
    part.unlink(missing_ok=True)
    return DownloadError(url, problem, hint)


def _attempt(url: str, part: Path, *, expected_size: int | None, timeout: float, binary: bool, bar,
             until: float, on_progress: Callable[[int, int | None], None] | None) -> None:
    """One request: continue ``part`` from its current size to the end, by
    ``until`` (a time.monotonic() value)."""
    offset = part.stat().st_size if part.exists() else 0
    timeout = max(0.1, min(timeout, until - time.monotonic()))
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            # Nothing left to send from there: either complete already or a stale part.
            if expected_size is not None and offset == expected_size:
                return
            raise _Restart() from None
        if e.code >= 500 or e.code in (408, 429):
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise _definitive(url, f"HTTP {e.code} {e.reason}", part,
                          "check the address; the file may have moved: use a mirror") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlparse(url).hostname
            raise DownloadError(url, f"DNS lookup of {host} failed ({reason.strerror or reason})",
                                "check the network connection, or use a mirror") from None
        if isinstance(reason, TimeoutError):
            raise _Transient(f"connection timed out after {timeout:g} s") from None
        raise _Transient(f"connection failed ({reason})") from None
    except TimeoutError:
        raise _Transient(f"no answer within {timeout:g} s") from None
    except (http.client.HTTPException, OSError) as e:
        # urllib lets errors while reading the status line through unwrapped.
        raise _Transient(f"connection failed before the headers ({type(e).__name__}: {e})") from None
    with resp:
        if offset and resp.status == 200:
            # The server ignored Range and sends the whole file: start over.
            offset = 0
            part.unlink(missing_ok=True)
            bar.reset()
        total = _total_from(resp, offset)
        if expected_size is not None and total is not None and total != expected_size:
            raise _definitive(url, f"size mismatch: the server announces {total:,} bytes, "
                                   f"expected {expected_size:,}", part,
                              "the file changed or the address is wrong: use a mirror that holds the right file")
        if total is not None:
            bar.total = total
            bar.refresh()
        received = offset
        with open(part, "ab" if offset else "wb") as out:
            first = True
            while True:
                try:
                    block = resp.read1(CHUNK)  # what has arrived: a slow server is seen at once
                except (http.client.HTTPException, OSError) as e:
                    raise _Transient(f"connection dropped after {received:,} bytes ({type(e).__name__})") from None
                if not block:
                    break
                if first and binary and offset == 0 and _is_html(resp.headers.get("Content-Type"), block):
                    out.close()
                    raise _definitive(url, "the server sent an HTML page, not the file (a quota, login, "
                                           "permission or error page)", part,
                                      "open the address in a browser to see the page; use a mirror")
                first = False
                out.write(block)
                received += len(block)
                bar.update(len(block))
                if on_progress is not None:
                    on_progress(received, total)
                if time.monotonic() > until:
                    raise _Late(received, total)
        if binary and offset == 0 and received == 0 and _is_html(resp.headers.get("Content-Type"), b""):
            raise _definitive(url, "the server sent an HTML page, not the file", part, "use a mirror")
        if total is not None and received < total:
            raise _Transient(f"connection dropped after {received:,} of {total:,} bytes")


def _check_complete(url: str, part: Path, expected_size: int | None, sha256: str | None) -> None:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise _definitive(url, f"size mismatch: got {size:,} bytes, expected {expected_size:,}", part,
                          "the file changed or the address is wrong: use a mirror that holds the right file")
    if sha256:
        got = sha256_of(part)
        if got != sha256.lower():
            raise _definitive(url, f"sha256 mismatch: expected {sha256.lower()}, got {got}", part,
                              "the file is corrupt or not the one pinned: download it again or use a mirror")


def download(
    url: str,
    dest: Path | str,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    retries: int = 4,
    timeout: float = 30,
    progress: bool = True,
    binary: bool = True,
    deadline: float | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` and return ``dest``.

    Streams to ``dest + '.part'`` (kept between runs, so an interrupted download
    resumes with an HTTP Range request), retries transient failures (dropped
    connection, 5xx, timeout) ``retries`` times with exponential backoff, checks
    ``expected_size`` and ``sha256`` when given and only then renames to
    ``dest``. ``binary=True`` refuses an HTML page (e.g. a Google Drive quota
    page). ``deadline`` bounds the whole download in seconds, retries
    included (a server that trickles bytes never trips the read ``timeout``);
    past it the ``.part`` is kept for the next run. ``on_progress(received,
    total)`` is called after each block (``total`` None when unknown). Raises
    :class:`DownloadError`; a definitive failure (404, HTML page, size or hash
    mismatch) leaves no ``.part`` behind. An existing ``dest`` whose sha256
    matches is kept without downloading.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if sha256 and dest.is_file() and sha256_of(dest) == sha256.lower():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    start = part.stat().st_size if part.exists() else 0
    bar = tqdm(total=expected_size, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
               desc=dest.name, disable=not progress, leave=True)
    until = time.monotonic() + deadline if deadline is not None else float("inf")
    try:
        for attempt in range(retries + 1):
            try:
                _attempt(url, part, expected_size=expected_size, timeout=timeout, binary=binary, bar=bar,
                         until=until, on_progress=on_progress)
                break
            except _Late as e:
                received, total = e.args
                of = f" of {total:,}" if total is not None else ""
                raise DownloadError(url, f"took longer than {deadline:g} s ({received:,}{of} bytes received)",
                                    "the server is too slow; the partial file is kept and the next run "
                                    "resumes it; or use a faster mirror") from None
            except _Restart:
                part.unlink(missing_ok=True)
                bar.reset()
                continue
            except _Transient as e:
                if attempt == retries:
                    kept = " (the partial file is kept: the next run resumes it)" if part.exists() else ""
                    raise DownloadError(url, f"{e} (gave up after {retries + 1} tries)",
                                        f"try again later{kept}, or use a mirror") from None
                wait = BACKOFF_BASE_S * 2 ** attempt
                if time.monotonic() + wait >= until:
                    raise DownloadError(url, f"{e}; no time left to retry within {deadline:g} s",
                                        "try again later, or use a mirror") from None
                bar.write(f"{dest.name}: {e}; retrying in {wait:g} s")
                time.sleep(wait)
        else:
            raise DownloadError(url, "the server kept refusing to continue the partial file",
                                "delete the .part file and try again, or use a mirror")
        _check_complete(url, part, expected_size, sha256)
        os.replace(part, dest)
    finally:
        bar.close()
    return dest
