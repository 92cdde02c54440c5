"""The HTTP transports: POST the request envelope as JSON, return the answer's body.

:class:`UrllibTransport` (urllib3, blocking) serves :class:`~taskguard.TaskGuard`
and :class:`AiohttpTransport` (aiohttp, asyncio) serves
:class:`~taskguard.AsyncTaskGuard` (DESIGN section 7 says why these two). Both
translate every failure the same way, through one :class:`_Endpoint`:

* 2xx: the body bytes (at most ``max_response_bytes``, else :class:`ProtocolError`);
* 429 and 5xx: retryable :class:`TransportError` with ``status`` and ``retry_after``;
* 401/403: :class:`ServiceError` saying to check ``auth_token`` and the registration;
* any other status: :class:`ServiceError`;
* connection refused/reset, DNS, timeouts: retryable :class:`TransportError`.

Every error carries the request's ``workid``; no message or repr holds the token.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import http
import json
import math
import ssl
import time
from typing import Any

import urllib3
from urllib3.exceptions import ClosedPoolError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import parse_url

from taskguard.errors import (
    ConfigurationError,
    ProtocolError,
    ServiceError,
    TaskStateUnknown,
    TransportError,
)
from taskguard.protocol import DEFAULT_MAX_RESPONSE_BYTES
from taskguard.transport.base import Request

__all__ = [
    "UrllibTransport",
    "parse_retry_after",
    "request_workid",
    "status_error",
]

# json.dumps builds a new encoder per call when given options; this one is built once.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, Urllib3Timeout)


def request_workid(request: object) -> str | None:
    """The ``workid`` of a request envelope as a string, or None if it has none."""
    try:
        workid = request["data"]["workid"]  # type: ignore[index]
    except (LookupError, TypeError):
        return None
    return None if workid is None else str(workid)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Returns None when the header is absent or unreadable; a date in the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_error(
    status: int, *, workid: str | None, url: str, retry_after: float | None = None
) -> TaskStateUnknown:
    """The error for a non-2xx HTTP ``status`` from the service at ``url``.

    429 and 5xx: a retryable :class:`TransportError`; any other: a
    :class:`ServiceError` (401/403 say to check ``auth_token``).
    """
    try:
        said = f"HTTP {status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        said = f"HTTP {status}"
    where = f"CheckTaskState at {url} answered {said} for workid {workid!r}"
    if status == 429 or 500 <= status < 600:
        wait = "" if retry_after is None else f"; it asks to retry after {retry_after:g} s"
        return TransportError(
            where + wait, workid=workid, retryable=True, status=status, retry_after=retry_after
        )
    if status in (401, 403):
        hint = "check auth_token and that the application registration (source) is complete"
    elif status in (404, 405):
        hint = "check service_url"
    else:
        hint = "the service rejected the request"
    return ServiceError(f"{where}: {hint}", workid=workid, status=status)


class _Endpoint:
    """What both transports share: the URL, the fixed headers, the error translation."""

    __slots__ = ("_token", "headers", "max_bytes", "path", "shown", "url")

    def __init__(self, url: str, auth_token: str | None, max_response_bytes: int) -> None:
        try:
            parts = parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"service URL {url!r} cannot be parsed: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.host:
            raise ConfigurationError(
                f"service URL must be http:// or https:// with a host: {url!r}"
            )
        if max_response_bytes < 1:
            raise ConfigurationError("max_response_bytes must be at least 1")
        self.url = url
        self.path = parts.request_uri
        # A password in the URL must not reach logs through repr or error messages.
        self.shown = url if parts.auth is None else parts._replace(auth="***").url
        self.max_bytes = max_response_bytes
        self._token = auth_token or None
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Identity only: a compressed answer could inflate past max_response_bytes.
            "Accept-Encoding": "identity",
            "User-Agent": f"taskguard/{_version()}",
        }
        if self._token:
            self.headers["Authorization"] = f"Bearer {self._token}"

    def status_error(
        self, status: int, retry_after: str | None, request: Request
    ) -> TaskStateUnknown:
        return status_error(
            status,
            workid=request_workid(request),
            url=self.shown,
            retry_after=parse_retry_after(retry_after),
        )

    def too_large(self, request: Request, size: int | None) -> ProtocolError:
        workid = request_workid(request)
        got = "" if size is None else f"{size} bytes, "
        return ProtocolError(
            f"CheckTaskState at {self.shown} answered workid {workid!r} with {got}more "
            f"than the {self.max_bytes}-byte limit (max_response_bytes); the answer is refused",
            workid=workid,
        )

    def failure(self, exc: BaseException, request: Request, timeout: float) -> TransportError:
        if isinstance(exc, ClosedPoolError):
            return self.closed(request)
        if isinstance(exc, _TIMEOUTS) and not isinstance(exc, NewConnectionError):
            what, retryable = f"no answer within {timeout:g} s", True
        elif _cert_failure(exc):
            what, retryable = f"TLS verification failed ({exc}); pass ca_certs= if needed", False
        else:
            what, retryable = f"{type(exc).__name__}: {exc}", True
        return self._error(what, request, retryable=retryable)

    def closed(self, request: Request) -> TransportError:
        return self._error("the transport is closed", request, retryable=False)

    def _error(self, what: str, request: Request, *, retryable: bool) -> TransportError:
        workid = request_workid(request)
        message = f"CheckTaskState at {self.shown} for workid {workid!r}: {what}"
        if self._token:  # foreign messages are not ours to trust
            message = message.replace(self._token, "***")
        return TransportError(message, workid=workid, retryable=retryable)


def _read_body(resp: Any, limit: int, deadline: float) -> bytes | None:
    """The whole body by ``deadline``, or None when it passes ``limit`` bytes.

    urllib3's read timeout bounds each socket read, not the answer: a server
    trickling a byte per read would hold a worker for ever. read1 makes at most
    one read, so the deadline is checked between reads. (The status line and
    headers are still read by http.client, a read timeout each.)
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read1(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
        if resp.length_remaining == 0:  # a known length, all read: no read for EOF
            break
        if time.monotonic() > deadline:
            resp.close()  # unread bytes must not become the next answer
            raise TimeoutError("the answer was not complete in time")
    resp.release_conn()  # fully read: the connection goes back to the pool
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class UrllibTransport:
    """Blocking HTTP transport: one keep-alive urllib3 pool for ``url``.

    ``send`` POSTs the envelope and returns the body bytes. It raises
    :class:`TransportError` (retryable for connection errors, timeouts, 429, 5xx),
    :class:`ServiceError` (other 4xx) or :class:`ProtocolError` (an answer over
    ``max_response_bytes``). TLS certificates are verified, against ``ca_certs``
    when given. Thread-safe; at most ``maxsize`` idle connections are kept.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        maxsize: int = 64,
        ca_certs: str | None = None,
    ) -> None:
        self._ep = _Endpoint(url, auth_token, max_response_bytes)
        tls: dict[str, Any] = {}
        if url.lower().startswith("https:"):
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs}
        self._pool = urllib3.connection_from_url(
            url, maxsize=maxsize, block=False, retries=False, **tls
        )
        self._timeout: tuple[float, urllib3.Timeout] = (-1.0, urllib3.Timeout())

    def send(self, request: Request, *, timeout: float) -> bytes:
        """POST ``request``; return the body. Connecting and each read wait at most
        ``timeout`` s, and the body must be complete ``timeout`` s after the start."""
        deadline = time.monotonic() + timeout
        ep = self._ep
        cached = self._timeout  # one tuple read: safe without a lock
        if cached[0] != timeout:
            cached = self._timeout = (timeout, urllib3.Timeout(connect=timeout, read=timeout))
        try:
            resp = self._pool.urlopen(
                "POST",
                ep.path,
                body=_encode(request).encode(),
                headers=ep.headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=cached[1],
                preload_content=False,
            )
            status = resp.status
            error: Exception
            if 200 <= status < 300:
                length = resp.length_remaining
                if length is None or length <= ep.max_bytes:
                    data = _read_body(resp, ep.max_bytes, deadline)
                    if data is not None:
                        return data
                error = ep.too_large(request, length)
            else:
                error = ep.status_error(status, resp.headers.get("Retry-After"), request)
            # Unread bytes would be read as the next answer on this keep-alive
            # connection: close it, then give the pool its slot back.
            resp.close()
            resp.release_conn()
            raise error
        except (Urllib3Error, OSError) as exc:
            raise ep.failure(exc, request, timeout) from exc

    def close(self) -> None:
        """Close the pool's connections; later sends raise a non-retryable TransportError."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"UrllibTransport({self._ep.shown!r})"


def _cert_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the chains are short; the bound guards against cycles
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@functools.cache
def _version() -> str:
    import taskguard  # not at the top: the package imports this module

    return getattr(taskguard, "__version__", "0")
