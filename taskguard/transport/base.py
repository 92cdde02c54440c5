"""What a transport is: one CheckTaskState request in, one response body out.

A transport does not retry and does not parse the answer; the lookup layer
does both. It reports a failed attempt by raising:

* :class:`~taskguard.errors.TransportError` with ``retryable=True`` for
  connection errors, timeouts, HTTP 5xx and 429 (``retry_after`` set from the
  server's ``Retry-After`` when it sent one);
* :class:`~taskguard.errors.ServiceError` for other HTTP 4xx (not retried);
* :class:`~taskguard.errors.ProtocolError` for an answer over the size limit.

A response body is JSON text (``bytes``/``str``) or an already-decoded mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["AsyncTransport", "Request", "ResponseBody", "SyncTransport"]

Request = dict[str, Any]
ResponseBody = bytes | str | Mapping[str, Any]


@runtime_checkable
class SyncTransport(Protocol):
    """A blocking transport (used by :class:`~taskguard.TaskGuard`)."""

    def send(self, request: Request, *, timeout: float) -> ResponseBody:
        """Send one request envelope; wait at most ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsyncTransport(Protocol):
    """An asyncio transport (used by :class:`~taskguard.AsyncTaskGuard`)."""

    async def asend(self, request: Request, *, timeout: float) -> ResponseBody:
        """Send one request envelope; wait at most ``timeout`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
