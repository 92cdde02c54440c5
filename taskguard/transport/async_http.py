"""The asyncio HTTP transport: :class:`AiohttpTransport` (the ``async`` extra).

It shares :class:`~taskguard.transport.http._Endpoint` with the blocking
transport, so both map statuses, ``Retry-After``, size limits and connection
failures to the same errors.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator
from types import ModuleType
from typing import TYPE_CHECKING

from taskguard.errors import ConfigurationError
from taskguard.protocol import DEFAULT_MAX_RESPONSE_BYTES
from taskguard.transport.base import Request
from taskguard.transport.http import _encode, _Endpoint

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """asyncio HTTP transport on an aiohttp ``ClientSession``.

    Built without a running loop (at import time, say): the session opens on
    the first ``asend``. Used from another event loop later, it drops the old
    session and opens one for that loop; a session is also closed when its loop
    ends through ``asyncio.run`` (its async-generator shutdown). Use it from one
    loop at a time. ``asend`` raises what :class:`UrllibTransport` raises;
    ``timeout`` bounds the whole attempt. Raises :class:`ConfigurationError`
    if aiohttp is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        maxsize: int = 100,
        ca_certs: str | None = None,
    ) -> None:
        self._aiohttp = _import_aiohttp()
        self._ep = _Endpoint(url, auth_token, max_response_bytes)
        self._errors = (self._aiohttp.ClientError, asyncio.TimeoutError, OSError)
        from yarl import URL  # aiohttp's URL type, installed with it

        self._url = URL(url)  # parsed once, not per request
        self._maxsize = maxsize
        self._ssl: ssl.SSLContext | bool = True
        if ca_certs is not None:
            self._ssl = ssl.create_default_context(cafile=ca_certs)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._timeout: tuple[float, aiohttp.ClientTimeout] = (-1.0, self._aiohttp.ClientTimeout())
        self._closed = False

    async def asend(self, request: Request, *, timeout: float) -> bytes:
        """POST ``request``; return the body. The attempt takes at most ``timeout`` s."""
        ep = self._ep
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            if self._closed:
                raise ep.closed(request)
            session = await self._open()
        cached = self._timeout
        if cached[0] != timeout:
            cached = self._timeout = (timeout, self._aiohttp.ClientTimeout(total=timeout))
        try:
            async with session.post(
                self._url,
                data=_encode(request).encode(),
                headers=ep.headers,
                timeout=cached[1],
                allow_redirects=False,
            ) as resp:
                status = resp.status
                if not 200 <= status < 300:
                    raise ep.status_error(status, resp.headers.get("Retry-After"), request)
                length = resp.content_length
                if length is not None and length <= ep.max_bytes:
                    return await resp.read()
                if length is None:
                    chunks: list[bytes] = []
                    size = 0
                    while chunk := await resp.content.readany():
                        size += len(chunk)
                        if size > ep.max_bytes:
                            break
                        chunks.append(chunk)
                    else:
                        return b"".join(chunks)
                resp.close()  # the rest is not read: the connection cannot be reused
                raise ep.too_large(request, length)
        except self._errors as exc:
            raise ep.failure(exc, request, timeout) from exc

    async def aclose(self) -> None:
        """Close the session; later sends raise a non-retryable TransportError."""
        self._closed = True
        closer, loop = self._closer, self._loop
        if closer is not None and loop is asyncio.get_running_loop():
            self._session = self._closer = self._loop = None
            await closer.aclose()
        else:
            self._drop()

    async def _open(self) -> aiohttp.ClientSession:
        self._drop()
        aio = self._aiohttp
        session: aiohttp.ClientSession = aio.ClientSession(
            connector=aio.TCPConnector(limit=self._maxsize, ssl=self._ssl),
            cookie_jar=aio.DummyCookieJar(),
            auto_decompress=False,
        )
        closer = _close_with_loop(session)
        # State first, then the await: concurrent first calls must share this session.
        self._session, self._loop, self._closer = session, asyncio.get_running_loop(), closer
        await anext(closer)  # registers it with the loop, which closes it at shutdown
        return session

    def _drop(self) -> None:
        closer, loop = self._closer, self._loop
        self._session = self._closer = self._loop = None
        if closer is None or loop is None or loop.is_closed():
            return  # asyncio.run closed it with the loop; nothing is left to release
        if loop.is_running():  # in another thread: close it there
            asyncio.run_coroutine_threadsafe(_aclose(closer), loop)
        # Else the loop is idle: dropping the generator makes the loop close the
        # session when it runs again or shuts down (its async-generator finalizer).

    def __repr__(self) -> str:
        return f"AiohttpTransport({self._ep.shown!r})"


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await session.close()


async def _aclose(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()


def _import_aiohttp() -> ModuleType:
    try:
        import aiohttp
    except ImportError:
        raise ConfigurationError(
            "the async HTTP transport needs aiohttp: pip install 'taskguard[async]', "
            "or pass transport="
        ) from None
    return aiohttp
