"""``AsyncTaskGuard``: the asyncio driver of the decision core.

The same steps as :class:`~taskguard.TaskGuard`, with ``await``. The guard can
be built at import time, outside any event loop: connections (the aiohttp
session, a Redis client built from ``redis_url``) and the single-flight table
are made on first use in a running loop, and made again if the guard is later
used from another loop (each test of an asyncio test suite has its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, TypeVar

from redis import Redis as SyncRedis

from taskguard.breaker import Breaker
from taskguard.cache.clients import async_client_from_url
from taskguard.cache.redis import AsyncRedisCache
from taskguard.core import Batch, Outcome
from taskguard.errors import ConfigurationError, TaskStateUnknown
from taskguard.guard import GuardBase
from taskguard.handlers import GuardDecorator, TaskHandle, WorkidSpec
from taskguard.lookup import AsyncSingleFlight
from taskguard.loops import OnSkipTask, atake_batch, decide_batch, make_task_workid
from taskguard.protocol import read_answer
from taskguard.settings import TaskGuardSettings
from taskguard.state import OnError, TaskState
from taskguard.transport.async_http import AiohttpTransport
from taskguard.transport.base import AsyncTransport
from taskguard.transport.callable import as_async_transport

__all__ = ["AsyncTaskGuard"]

T = TypeVar("T")


class _LoopBound:
    """What belongs to one event loop: the Redis tier and the single-flight table."""

    __slots__ = ("flights", "loop", "redis")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        redis: AsyncRedisCache | None,
        flights: AsyncSingleFlight,
    ) -> None:
        self.loop = loop
        self.redis = redis
        self.flights = flights


class AsyncTaskGuard(GuardBase):
    """Checks tasks against CheckTaskState from asyncio code.

    ``AsyncTaskGuard(settings=None, *, transport=None, redis=None)``: like
    :class:`~taskguard.TaskGuard`; ``transport`` may be an ``async def`` (or an
    object with ``asend``), ``redis`` a ``redis.asyncio`` client. The HTTP
    transport needs aiohttp (``pip install 'taskguard[async]'``): without it and
    without ``transport=``, construction raises :class:`ConfigurationError`.
    """

    def __init__(
        self,
        settings: TaskGuardSettings | None = None,
        *,
        transport: object = None,
        redis: Any = None,
    ) -> None:
        super().__init__(settings, transport=transport, redis=redis)
        s = self.settings
        self._transport: AsyncTransport = (
            AiohttpTransport(**self._http_options())
            if transport is None
            else as_async_transport(transport)
        )
        self._owns_transport = transport is None
        if isinstance(redis, SyncRedis):  # its commands would block the event loop
            raise ConfigurationError(
                "AsyncTaskGuard needs an asyncio Redis client (redis.asyncio.Redis); "
                "use TaskGuard for a blocking one"
            )
        self._user_redis = redis
        self._redis_breaker = Breaker(threshold=1, cooldown=s.redis_breaker_cooldown)
        self._bound: _LoopBound | None = None

    def _has_redis_client(self) -> bool:
        return self._user_redis is not None

    def _here(self) -> _LoopBound:
        loop = asyncio.get_running_loop()
        bound = self._bound
        if bound is None or bound.loop is not loop:
            bound = self._bound = _LoopBound(
                loop,
                self._make_redis(),
                AsyncSingleFlight(on_coalesce=self._core.stats.coalesced.__next__),
            )
        return bound

    def _make_redis(self) -> AsyncRedisCache | None:
        s = self.settings
        client = self._user_redis
        if client is None:
            if s.redis_url is None:
                return None
            client = async_client_from_url(
                s.redis_url, timeout=s.redis_timeout, max_connections=max(64, s.lookup_concurrency)
            )
        return AsyncRedisCache(
            client,
            breaker=self._redis_breaker,
            owns_client=self._user_redis is None,
            **self._redis_options(),
        )

    # -- questions ------------------------------------------------------------

    async def check(self, workid: str | int) -> TaskState:
        """The state of one task (see :meth:`TaskGuard.check`); same errors."""
        wid, state = self._core.begin(workid)
        return state if state is not None else await self._resolve(wid)

    async def is_closed(self, workid: str | int) -> bool:
        """True when the task is confirmed closed. Raises like :meth:`check`."""
        return (await self.check(workid)).closed

    async def check_many(self, workids: Iterable[str | int]) -> dict[str, TaskState]:
        """The states of many tasks (see :meth:`TaskGuard.check_many`): one Redis
        round trip, the misses looked up concurrently (``lookup_concurrency``)."""
        return self._core.batch_result(await self._check_batch(workids))

    async def _resolve(self, wid: str) -> TaskState:
        here = self._here()
        if here.redis is not None:
            state = self._core.from_redis(wid, await here.redis.get(wid))
            if state is not None:
                return state
        return await here.flights.run(wid, lambda: self._fetch(here, wid, share=True))

    async def _fetch(self, here: _LoopBound, wid: str, *, share: bool) -> TaskState:
        core = self._core
        settled = core.settled(wid)
        if settled is not None:
            return settled
        core.lookup_started(wid)
        try:
            closed = await core.retry.acall(lambda timeout: self._attempt(wid, timeout), wid)
        except BaseException as exc:
            core.lookup_ended(wid, exc)
            raise
        core.lookup_ended(wid, None)
        state = core.answered(wid, closed)
        if share and here.redis is not None:
            await here.redis.put(wid, closed)
        return state

    async def _attempt(self, wid: str, timeout: float) -> bool:
        core = self._core
        body = await self._transport.asend(core.request(wid), timeout=timeout)
        return read_answer(body, wid, max_bytes=core.max_response_bytes)

    async def _check_batch(
        self, workids: Iterable[object], *, validated: bool = False, states: bool = True
    ) -> Batch:
        core = self._core
        batch = core.begin_batch(workids, validated=validated)
        if not batch.misses:
            return batch
        here = self._here()
        if here.redis is not None:
            core.batch_from_redis(batch, await here.redis.get_many(batch.misses), states=states)
        if batch.misses:
            fresh = core.batch_answers(batch, await self._lookup_all(here, batch.misses))
            if fresh and here.redis is not None:
                await here.redis.put_many(fresh)
        return batch

    async def _lookup_all(self, here: _LoopBound, wids: list[str]) -> list[Outcome]:
        limit = asyncio.Semaphore(self.settings.lookup_concurrency)

        async def one(wid: str) -> Outcome:
            async with limit:
                try:
                    return await here.flights.run(wid, lambda: self._fetch(here, wid, share=False))
                except TaskStateUnknown as exc:
                    return exc

        if len(wids) == 1:
            return [await one(wids[0])]
        return list(await asyncio.gather(*(one(wid) for wid in wids)))

    # -- cache writes ---------------------------------------------------------

    async def mark_closed(self, workid: str | int) -> None:
        """Record ``workid`` as closed in every tier."""
        wid = self._core.marked(workid)
        here = self._here()
        if here.redis is not None:
            await here.redis.put(wid, True)

    async def forget(self, workid: str | int) -> None:
        """Drop every cached entry for ``workid``."""
        wid = self._core.forgotten(workid)
        here = self._here()
        if here.redis is not None:
            await here.redis.delete(wid)

    # -- the faces --------------------------------------------------------------

    def _gate(self, workid: object, on_error: OnError | str | None) -> tuple[TaskState, bool]:
        raise TypeError("AsyncTaskGuard cannot guard a blocking handler; use TaskGuard")

    async def _agate(
        self, workid: object, on_error: OnError | str | None
    ) -> tuple[TaskState, bool]:
        wid, state = self._core.begin(workid)
        outcome: Outcome
        if state is not None:
            outcome = state
        else:
            try:
                outcome = await self._resolve(wid)
            except TaskStateUnknown as exc:
                outcome = exc
        return self._core.gate(wid, outcome, on_error)

    def _mark(self, wid: str) -> None:
        raise TypeError("AsyncTaskGuard cannot guard a blocking handler; use TaskGuard")

    async def _amark(self, wid: str) -> None:
        await self.mark_closed(wid)

    skip_if_closed = GuardDecorator(sync_ok=False)
    """Decorator for ``async def`` handlers (a plain ``def`` is a TypeError)."""

    @contextlib.asynccontextmanager
    async def task(
        self,
        workid: str | int,
        *,
        on_error: OnError | str | None = None,
        mark_closed_on_success: bool = False,
    ) -> AsyncIterator[TaskHandle]:
        """``async with guard.task(workid) as t: if t.skip: return ...``"""
        state, skip = await self._agate(workid, on_error)
        yield TaskHandle(state, skip)
        if mark_closed_on_success and not skip:
            await self.mark_closed(state.workid)

    async def open_only(
        self,
        tasks: AsyncIterable[T] | Iterable[T],
        workid: WorkidSpec = None,
        *,
        batch_size: int = 1,
        on_skip: OnSkipTask[T] | None = None,
        on_error: OnError | str | None = None,
    ) -> AsyncIterator[T]:
        """``async for task in guard.open_only(tasks): ...`` — the open tasks, lazily,
        in order, ``batch_size`` per check (see :meth:`TaskGuard.open_only`)."""
        locate = make_task_workid(workid)
        policy = self._core.policy(on_error)
        source = _aiter(tasks)
        while True:
            chunk, wids, stop = await atake_batch(source, batch_size, locate)
            if chunk:
                batch = await self._check_batch(wids, validated=True, states=False)
                for task in decide_batch(self._core, chunk, wids, batch, on_skip, policy):
                    yield task
            if stop is not None:
                if isinstance(stop, StopAsyncIteration):
                    return
                raise stop

    # -- lifecycle ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the HTTP session and the Redis pool of the current loop."""
        if self._owns_transport:
            await self._transport.aclose()
        bound, self._bound = self._bound, None
        if bound is not None and bound.redis is not None:
            await bound.redis.aclose()

    async def __aenter__(self) -> AsyncTaskGuard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _from_sync(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def _aiter(tasks: AsyncIterable[T] | Iterable[T]) -> AsyncIterator[T]:
    if isinstance(tasks, AsyncIterable):
        return aiter(tasks)
    return _from_sync(tasks)
