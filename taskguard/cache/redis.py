"""The shared tier: task states in Redis, behind a breaker, for sync and asyncio code.

Layout (a contract between every version of taskguard sharing one Redis):

* one string key per cached workid, ``{key_prefix}:task:{workid}``;
* its value is ``closed`` or ``open``, written with ``SET key value PX ttl_ms``
  (an ``open`` answer with ``NX`` as well, so it never overwrites a ``closed``
  one: closed is terminal);
* nothing else is ever written.

A workid is used as a literal key: taskguard only sends GET, MGET, SET and DEL
by exact key (never KEYS or SCAN patterns), so ``*``, ``?``, ``[``, ``{``,
spaces and any unicode are harmless. Values are read back as ``bytes`` or
``str`` (a client built with ``decode_responses=True`` works); any other value
is a miss, logged at debug.

Redis is never a single point of failure. Every command's redis and socket
errors are caught here, counted (``redis_errors``), fed to a breaker, and
answered as a miss (a write does nothing). While the breaker is open no
command is sent at all (``redis_skipped``): the guard asks the
CheckTaskState service directly. One WARNING is logged (logger
``taskguard.redis``) when the breaker opens and one INFO when Redis answers again.

:func:`client_from_url` and :func:`async_client_from_url` build clients that
cannot stall a worker: every connect and read is bounded by ``timeout`` and
redis-py's own retries are off (its defaults turn a 0.5 s timeout into
seconds on a frozen server).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from redis.exceptions import RedisError, ResponseError

from taskguard.breaker import Breaker, Stats
from taskguard.cache.clients import async_client_from_url, client_from_url, redacted_url

__all__ = [
    "AsyncRedisCache",
    "AsyncRedisClient",
    "RedisCache",
    "SyncRedisClient",
    "async_client_from_url",
    "client_from_url",
    "redacted_url",
]

logger = logging.getLogger("taskguard.redis")

# What a command may raise when Redis is down, slow or refuses: redis-py's errors,
# socket errors, and asyncio's timeout (a distinct class before Python 3.11).
# Deliberately not BaseException: a cancelled task or Ctrl-C must go through.
_REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

_CLOSED, _OPEN = "closed", "open"
_DECODE: dict[object, bool] = {b"closed": True, "closed": True, b"open": False, "open": False}

# A key, its value, its PX in milliseconds and its NX flag: one SET.
_Write = tuple[str, str, int, bool]


class SyncPipeline(Protocol):
    """The part of a redis-py pipeline that :class:`RedisCache` uses."""

    def set(self, name: str, value: str, *, px: int, nx: bool = ...) -> Any: ...
    def execute(self) -> Any: ...


class SyncRedisClient(Protocol):
    """The commands :class:`RedisCache` sends; ``redis.Redis`` fits, and so does
    any client with the same methods."""

    def get(self, name: str) -> Any: ...
    def mget(self, keys: Sequence[str]) -> Any: ...
    def set(self, name: str, value: str, *, px: int, nx: bool = ...) -> Any: ...
    def delete(self, *names: str) -> Any: ...
    def pipeline(self, transaction: bool = ...) -> SyncPipeline: ...


class AsyncPipeline(Protocol):
    """The part of a ``redis.asyncio`` pipeline that :class:`AsyncRedisCache` uses."""

    def set(self, name: str, value: str, *, px: int, nx: bool = ...) -> Any: ...
    def execute(self) -> Awaitable[Any]: ...


class AsyncRedisClient(Protocol):
    """The commands :class:`AsyncRedisCache` awaits; ``redis.asyncio.Redis`` fits."""

    def get(self, name: str) -> Awaitable[Any]: ...
    def mget(self, keys: Sequence[str]) -> Awaitable[Any]: ...
    def set(self, name: str, value: str, *, px: int, nx: bool = ...) -> Awaitable[Any]: ...
    def delete(self, *names: str) -> Awaitable[Any]: ...
    def pipeline(self, transaction: bool = ...) -> AsyncPipeline: ...


class _Miss(enum.Enum):
    MISS = "miss"  # no command was sent, or it failed: the caller answers "not cached"


_MISS = _Miss.MISS
ClientT = TypeVar("ClientT")


class _RedisCacheBase(Generic[ClientT]):
    """Everything but the I/O call: keys, values, TTLs, breaker, stats, logging."""

    def __init__(
        self,
        client: ClientT,
        *,
        key_prefix: str,
        closed_ttl: float,
        open_ttl: float,
        breaker: Breaker,
        stats: Stats,
        owns_client: bool = False,
        name: str = "redis",
    ) -> None:
        if closed_ttl <= 0:
            raise ValueError(f"closed_ttl must be > 0 seconds, not {closed_ttl}")
        if open_ttl < 0:
            raise ValueError(f"open_ttl must be >= 0 seconds (0: never cached), not {open_ttl}")
        self.client = client
        self.name = name
        self._prefix = f"{key_prefix}:task:"
        self._closed_px = _milliseconds(closed_ttl)
        self._open_px = _milliseconds(open_ttl) if open_ttl > 0 else None
        self._breaker = breaker
        self._stats = stats
        self._owns_client = owns_client
        self._server = _describe(client)
        self._down = False  # a WARNING was logged; the next success logs INFO
        self._response_error_logged = False

    def key(self, workid: str) -> str:
        """The Redis key of ``workid``: ``{key_prefix}:task:{workid}``."""
        return self._prefix + workid

    def _write(self, workid: str, closed: bool) -> _Write | None:
        if closed:
            return (self._prefix + workid, _CLOSED, self._closed_px, False)
        if self._open_px is None:
            return None
        return (self._prefix + workid, _OPEN, self._open_px, True)

    def _writes(self, answers: Sequence[tuple[str, bool]]) -> list[_Write]:
        return [w for workid, closed in answers if (w := self._write(workid, closed)) is not None]

    @staticmethod
    def _fill(pipe: SyncPipeline | AsyncPipeline, writes: list[_Write]) -> None:
        for key, value, px, nx in writes:
            pipe.set(key, value, px=px, nx=nx)

    # -- breaker and bookkeeping around each command -----------------------------

    def _allow(self) -> bool:
        if self._breaker.allow():
            return True
        next(self._stats.redis_skipped)
        return False

    def _succeeded(self) -> None:
        self._breaker.success()
        if self._down:
            self._down = False
            self._log(logging.INFO, "answers again; using it")

    def _failed(self, exc: BaseException, command: str) -> None:
        next(self._stats.redis_errors)
        if isinstance(exc, ResponseError):
            # The server answered (a READONLY replica, an ACL refusal, a key of
            # another type): it is up, so other commands keep going to it.
            self._succeeded()
            level = logging.DEBUG if self._response_error_logged else logging.WARNING
            self._response_error_logged = True
            self._log(level, "refused %s (%s); treated as a cache miss", command, exc)
            return
        opened = self._breaker.failure()
        if opened or (self._breaker.threshold == 0 and not self._down):
            self._down = True
            cooldown = self._breaker.cooldown
            how_long = f"for {cooldown:g} seconds" if opened else "until Redis answers again"
            self._log(
                logging.WARNING,
                "failed on %s (%s); the guard asks the CheckTaskState service directly %s",
                command,
                _error_text(exc),
                how_long,
            )
        else:
            self._log(logging.DEBUG, "failed on %s (%s)", command, _error_text(exc))

    def _log(self, level: int, message: str, *args: object) -> None:
        logger.log(level, f"Redis cache %r at %s {message}", self.name, self._server, *args)

    def _aborted(self) -> None:
        # Neither success nor failure (cancelled, interrupted): if this command
        # was the breaker's probe, let another caller probe.
        self._breaker.release_probe()

    # -- reading values ----------------------------------------------------------

    def _decode(self, raw: object, key: str) -> bool | None:
        if raw is None:
            return None
        try:
            value = _DECODE.get(raw)
        except TypeError:  # unhashable: not a value taskguard wrote
            value = None
        if value is None:
            logger.debug("Redis key %r holds %r, not closed/open: a cache miss", key, raw)
        return value

    def _decode_many(self, raw: object, keys: list[str]) -> list[bool | None]:
        if not isinstance(raw, (list, tuple)) or len(raw) != len(keys):
            logger.debug("Redis MGET of %d keys returned %r: all cache misses", len(keys), raw)
            return [None] * len(keys)
        try:
            values = list(map(_DECODE.get, raw))  # C-level, like the MGET reply itself
        except TypeError:
            return [self._decode(item, key) for item, key in zip(raw, keys, strict=True)]
        if None in values:  # a miss or an unknown value; only the latter is logged
            for item, key in zip(raw, keys, strict=True):
                if item is not None and item not in _DECODE:
                    self._decode(item, key)
        return values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, server={self._server!r})"


class RedisCache(_RedisCacheBase[SyncRedisClient]):
    """The Redis tier for blocking code. Each method is one round trip (or none
    while the breaker is open) and never raises a Redis or socket error."""

    def _call(self, command: str, fn: Callable[..., object], *args: Any, **kwargs: Any) -> object:
        if not self._allow():
            return _MISS
        try:
            result = fn(*args, **kwargs)
        except _REDIS_ERRORS as exc:
            self._failed(exc, command)
            return _MISS
        except BaseException:
            self._aborted()
            raise
        self._succeeded()
        return result

    def get(self, workid: str) -> bool | None:
        """One GET: True if cached closed, False if cached open, None on a miss."""
        key = self._prefix + workid
        if self._breaker.failures or self._down:  # recovering: the careful path
            raw = self._call("GET", self.client.get, key)
            return None if raw is _MISS else self._decode(raw, key)
        # Healthy Redis: a check answered by Redis should cost one round trip and
        # little else (P2), so the breaker bookkeeping that a success would do
        # (nothing, when there were no failures) and the decoding are inlined.
        try:
            raw = self.client.get(key)
        except _REDIS_ERRORS as exc:
            self._failed(exc, "GET")
            return None
        except BaseException:
            self._aborted()
            raise
        if type(raw) is bytes:
            value = _DECODE.get(raw)
            if value is not None:
                return value
        return self._decode(raw, key)

    def get_many(self, workids: Sequence[str]) -> list[bool | None]:
        """One MGET for the whole batch; the answers in the order of ``workids``."""
        if not workids:
            return []
        keys = list(map(self._prefix.__add__, workids))  # C-level: ~20 ns a key
        raw = self._call("MGET", self.client.mget, keys)
        return [None] * len(keys) if raw is _MISS else self._decode_many(raw, keys)

    def put(self, workid: str, closed: bool) -> None:
        """Cache an answer: closed for ``closed_ttl``; open for ``open_ttl``, if > 0."""
        write = self._write(workid, closed)
        if write is not None:
            key, value, px, nx = write
            self._call("SET", self.client.set, key, value, px=px, nx=nx)

    def put_many(self, answers: Sequence[tuple[str, bool]]) -> None:
        """Cache many ``(workid, closed)`` answers in one round trip (a pipeline)."""
        writes = self._writes(answers)
        if writes:
            self._call("SET (pipeline)", self._pipelined, writes)

    def _pipelined(self, writes: list[_Write]) -> object:
        pipe = self.client.pipeline(transaction=False)
        self._fill(pipe, writes)
        return pipe.execute()

    def delete(self, workid: str) -> None:
        """Drop ``workid``'s cached answer."""
        self._call("DEL", self.client.delete, self._prefix + workid)

    def close(self) -> None:
        """Close the client, if this cache built it (``owns_client``)."""
        if self._owns_client:
            close = getattr(self.client, "close", None)
            if close is not None:
                close()


class AsyncRedisCache(_RedisCacheBase[AsyncRedisClient]):
    """The Redis tier for asyncio code: :class:`RedisCache` with ``async`` methods."""

    async def _call(
        self, command: str, fn: Callable[..., Awaitable[object]], *args: Any, **kwargs: Any
    ) -> object:
        if not self._allow():
            return _MISS
        try:
            result = await fn(*args, **kwargs)
        except _REDIS_ERRORS as exc:
            self._failed(exc, command)
            return _MISS
        except BaseException:
            self._aborted()
            raise
        self._succeeded()
        return result

    async def get(self, workid: str) -> bool | None:
        """One GET: True if cached closed, False if cached open, None on a miss."""
        key = self._prefix + workid
        raw = await self._call("GET", self.client.get, key)
        return None if raw is _MISS else self._decode(raw, key)

    async def get_many(self, workids: Sequence[str]) -> list[bool | None]:
        """One MGET for the whole batch; the answers in the order of ``workids``."""
        if not workids:
            return []
        keys = list(map(self._prefix.__add__, workids))  # C-level: ~20 ns a key
        raw = await self._call("MGET", self.client.mget, keys)
        return [None] * len(keys) if raw is _MISS else self._decode_many(raw, keys)

    async def put(self, workid: str, closed: bool) -> None:
        """Cache an answer: closed for ``closed_ttl``; open for ``open_ttl``, if > 0."""
        write = self._write(workid, closed)
        if write is not None:
            key, value, px, nx = write
            await self._call("SET", self.client.set, key, value, px=px, nx=nx)

    async def put_many(self, answers: Sequence[tuple[str, bool]]) -> None:
        """Cache many ``(workid, closed)`` answers in one round trip (a pipeline)."""
        writes = self._writes(answers)
        if writes:
            await self._call("SET (pipeline)", self._pipelined, writes)

    async def _pipelined(self, writes: list[_Write]) -> object:
        pipe = self.client.pipeline(transaction=False)
        self._fill(pipe, writes)
        return await pipe.execute()

    async def delete(self, workid: str) -> None:
        """Drop ``workid``'s cached answer."""
        await self._call("DEL", self.client.delete, self._prefix + workid)

    async def aclose(self) -> None:
        """Close the client, if this cache built it (``owns_client``)."""
        if self._owns_client:
            close = getattr(self.client, "aclose", None) or getattr(self.client, "close", None)
            if close is not None:
                await close()


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))  # PX 0 is an error; a tiny TTL is 1 ms


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(client: object) -> str:
    """Where a client points, never with its password (host, port, db or socket)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, Mapping):
        return type(client).__name__
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    connection_class = getattr(pool, "connection_class", None)
    scheme = "rediss" if "SSL" in getattr(connection_class, "__name__", "") else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{host}:{port}/{db}"
