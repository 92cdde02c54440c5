"""Building redis-py clients that cannot stall a worker.

A client built here has ``redis_timeout`` as its connect, read and pool-wait
timeout, no client-side retries (redis-py's default retries turn a 0.5 s
timeout into seconds on a frozen server), RESP2, and options in the URL's
query string that would undo those bounds are dropped with a warning.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["async_client_from_url", "client_from_url", "redacted_url"]

logger = logging.getLogger("taskguard.redis")


def _client_options(timeout: float) -> dict[str, Any]:
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "timeout": timeout,  # the blocking pool: wait this long for a free connection
        "decode_responses": False,
        # RESP2: with RESP3, redis-py 8 turns on maintenance notifications, whose
        # "relaxed" timeout is 10 s, and spends a round trip per connection on them.
        "protocol": 2,
    }


# Options taskguard decides whatever a URL's query string says (redis-py lets the
# query string win over keyword arguments): they keep a frozen Redis from stalling
# a worker.
_FORCED_OPTIONS = frozenset(_client_options(1.0)) | {"retry_on_timeout", "retry_on_error"}


def client_from_url(url: str, *, timeout: float, max_connections: int = 256) -> redis.Redis:
    """A blocking redis-py client for ``url`` (``redis://``, ``rediss://``,
    ``unix://``; ``user:password@`` as redis-py parses it) that cannot stall:
    connect and read bounded by ``timeout``, no client-side retries, and a pool of
    ``max_connections`` that waits at most ``timeout`` for a free connection
    instead of failing when many threads share it."""
    pool = redis.BlockingConnectionPool.from_url(
        _without_forced_options(url),
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 0),
        **_client_options(timeout),
    )
    return redis.Redis.from_pool(pool)


def async_client_from_url(
    url: str, *, timeout: float, max_connections: int = 256
) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for ``url`` with the guarantees of
    :func:`client_from_url`. Many concurrent coroutines queue for the
    ``max_connections`` connections (at most ``timeout`` each) instead of failing."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        _without_forced_options(url),
        max_connections=max_connections,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **_client_options(timeout),
    )
    return redis.asyncio.Redis.from_pool(pool)


def redacted_url(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` query
    option) replaced by ``***``, for messages and logs."""
    # Plain string surgery, not urlunsplit (which turns unix:///path into unix:/path).
    # The last "@" ends the userinfo: if a query holds one too, more is hidden, not less.
    start = url.find("://") + 3 if "://" in url else 0
    at = url.rfind("@")
    if at >= start:
        user, colon, _ = url[start:at].partition(":")
        if colon:
            url = f"{url[:start]}{user}:***{url[at:]}"
    head, question, query = url.partition("?")
    if not question:
        return url
    items = query.split("&")
    return f"{head}?" + "&".join(
        "password=***" if _option_name(item) == "password" else item for item in items
    )


def _without_forced_options(url: str) -> str:
    query = urlsplit(url).query  # found as redis-py will find it
    if not query:
        return url
    items = query.split("&")
    ignored = sorted({_option_name(item) for item in items} & _FORCED_OPTIONS)
    if not ignored:
        return url
    logger.warning(
        "Redis URL %s: ignoring %s; taskguard sets them (redis_timeout, no retries)",
        redacted_url(url),
        ", ".join(ignored),
    )
    kept = "&".join(item for item in items if _option_name(item) not in _FORCED_OPTIONS)
    before, _, after = url.rpartition(f"?{query}")
    return f"{before}?{kept}{after}" if kept else f"{before}{after}"


def _option_name(item: str) -> str:
    return unquote(item.partition("=")[0])
