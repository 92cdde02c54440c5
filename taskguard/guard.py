"""``TaskGuard``: the blocking driver of the decision core.

Every method is a few lines: ask :class:`~taskguard.core.GuardCore` what to do,
do the I/O it names (a Redis command, a service call), hand the result back.
``AsyncTaskGuard`` (``aguard.py``) runs the same steps with ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from taskguard.breaker import Breaker
from taskguard.cache.clients import client_from_url, redacted_url
from taskguard.cache.redis import RedisCache
from taskguard.core import Batch, GuardCore, Outcome
from taskguard.errors import ConfigurationError, TaskStateUnknown
from taskguard.handlers import GuardDecorator, TaskHandle, WorkidSpec
from taskguard.lookup import SingleFlight
from taskguard.loops import OnSkipTask, decide_batch, make_task_workid, take_batch
from taskguard.protocol import read_answer
from taskguard.settings import TaskGuardSettings
from taskguard.state import OnError, TaskState
from taskguard.transport.base import SyncTransport
from taskguard.transport.callable import as_sync_transport
from taskguard.transport.http import UrllibTransport

__all__ = ["GuardBase", "TaskGuard"]

T = TypeVar("T")
G = TypeVar("G", bound="GuardBase")


class GuardBase:
    """What both guards share that is not I/O: settings, the core, counters."""

    _core: GuardCore

    def __init__(self, settings: TaskGuardSettings | None, *, transport: object, redis: object):
        settings = TaskGuardSettings() if settings is None else settings
        if transport is None and settings.service_url is None:
            raise ConfigurationError(
                f"{type(self).__name__} needs a CheckTaskState endpoint: set service_url "
                "(TASKGUARD_SERVICE_URL) or pass transport="
            )
        self.settings = settings
        shared = redis is not None or settings.redis_url is not None
        self._core = GuardCore(settings, shared_cache=shared)

    @classmethod
    def from_settings(cls: type[G], settings: TaskGuardSettings, **kwargs: Any) -> G:
        """Build a guard from explicit settings (``transport=``/``redis=`` may follow)."""
        return cls(settings, **kwargs)

    @classmethod
    def from_env(cls: type[G], **kwargs: Any) -> G:
        """Build a guard from ``TASKGUARD_*`` environment variables.
        Raises pydantic's ``ValidationError`` naming a bad setting."""
        return cls(TaskGuardSettings(), **kwargs)

    def _http_options(self) -> dict[str, Any]:
        """How the default HTTP transport is built, for either driver."""
        s = self.settings
        assert s.service_url is not None  # checked in __init__
        return {
            "url": s.service_url,
            "auth_token": s.auth_token.get_secret_value() if s.auth_token else None,
            "max_response_bytes": s.max_response_bytes,
            "maxsize": s.lookup_concurrency,
        }

    def _redis_options(self) -> dict[str, Any]:
        """How a Redis tier is built, for either driver (the breaker and client aside)."""
        s = self.settings
        return {
            "key_prefix": s.key_prefix,
            "closed_ttl": s.closed_ttl,
            "open_ttl": s.open_ttl,
            "stats": self._core.stats,
        }

    def stats(self) -> dict[str, int]:
        """Counters since the guard was built: checks, local_hits, redis_hits,
        service_calls, retries, skips, errors and more (see ``STAT_NAMES``)."""
        return self._core.stats.snapshot()

    def __repr__(self) -> str:
        s = self.settings
        redis = "on" if s.redis_url or self._has_redis_client() else "off"
        url = None if s.service_url is None else redacted_url(s.service_url)
        return f"{type(self).__name__}(service_url={url!r}, redis={redis})"

    def _has_redis_client(self) -> bool:
        return False


class TaskGuard(GuardBase):
    """Checks tasks against CheckTaskState, blocking. Thread-safe.

    ``TaskGuard(settings=None, *, transport=None, redis=None)``: ``settings``
    default to the environment; ``transport`` replaces the HTTP transport (any
    ``send(request, *, timeout)`` object or a plain function from request dict
    to response); ``redis`` hands in a redis-py client instead of ``redis_url``.
    Raises :class:`ConfigurationError` without a service_url or transport.
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
        self._transport: SyncTransport = (
            UrllibTransport(**self._http_options())
            if transport is None
            else as_sync_transport(transport)
        )
        self._owns_transport = transport is None
        self._redis: RedisCache | None = None
        if redis is not None or s.redis_url is not None:
            self._redis = RedisCache(
                redis
                if redis is not None
                else client_from_url(s.redis_url or "", timeout=s.redis_timeout),
                breaker=Breaker(threshold=1, cooldown=s.redis_breaker_cooldown),
                owns_client=redis is None,
                **self._redis_options(),
            )
        self._flights = SingleFlight(on_coalesce=self._core.stats.coalesced.__next__)
        self._pool: ThreadPoolExecutor | None = None

    def _has_redis_client(self) -> bool:
        return self._redis is not None

    # -- questions ------------------------------------------------------------

    def check(self, workid: str | int) -> TaskState:
        """The state of one task, from the nearest tier that knows it.
        Raises :class:`InvalidWorkId` before any I/O, and a
        :class:`TaskStateUnknown` subclass when the service gives no answer."""
        wid, state = self._core.begin(workid)
        return state if state is not None else self._resolve(wid)

    def is_closed(self, workid: str | int) -> bool:
        """True when the task is confirmed closed. Raises like :meth:`check`."""
        return self.check(workid).closed

    def check_many(self, workids: Iterable[str | int]) -> dict[str, TaskState]:
        """The states of many tasks: one Redis round trip for the batch, the misses
        looked up concurrently. If any lookup fails, the others still finish and
        are cached, then the first failure in input order is raised."""
        return self._core.batch_result(self._check_batch(workids))

    def _resolve(self, wid: str) -> TaskState:
        if self._redis is not None:
            state = self._core.from_redis(wid, self._redis.get(wid))
            if state is not None:
                return state
        return self._flights.run(wid, lambda: self._fetch(wid, share=True))

    def _fetch(self, wid: str, *, share: bool) -> TaskState:
        core = self._core
        settled = core.settled(wid)
        if settled is not None:
            return settled
        core.lookup_started(wid)
        try:
            closed = core.retry.call(lambda timeout: self._attempt(wid, timeout), wid)
        except BaseException as exc:
            core.lookup_ended(wid, exc)
            raise
        core.lookup_ended(wid, None)
        state = core.answered(wid, closed)
        if share and self._redis is not None:
            self._redis.put(wid, closed)
        return state

    def _attempt(self, wid: str, timeout: float) -> bool:
        core = self._core
        body = self._transport.send(core.request(wid), timeout=timeout)
        return read_answer(body, wid, max_bytes=core.max_response_bytes)

    def _check_batch(
        self, workids: Iterable[object], *, validated: bool = False, states: bool = True
    ) -> Batch:
        core = self._core
        batch = core.begin_batch(workids, validated=validated)
        if batch.misses and self._redis is not None:
            core.batch_from_redis(batch, self._redis.get_many(batch.misses), states=states)
        if batch.misses:
            fresh = core.batch_answers(batch, self._lookup_all(batch.misses))
            if fresh and self._redis is not None:
                self._redis.put_many(fresh)
        return batch

    def _outcome(self, wid: str) -> Outcome:
        try:
            return self._flights.run(wid, lambda: self._fetch(wid, share=False))
        except TaskStateUnknown as exc:
            return exc

    def _lookup_all(self, wids: list[str]) -> list[Outcome]:
        if len(wids) == 1:
            return [self._outcome(wids[0])]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.settings.lookup_concurrency, thread_name_prefix="taskguard"
            )
        return list(self._pool.map(self._outcome, wids))

    # -- cache writes ---------------------------------------------------------

    def mark_closed(self, workid: str | int) -> None:
        """Record ``workid`` as closed in every tier (a finished task, say)."""
        wid = self._core.marked(workid)
        if self._redis is not None:
            self._redis.put(wid, True)

    def forget(self, workid: str | int) -> None:
        """Drop every cached entry for ``workid``: the next check asks the service."""
        wid = self._core.forgotten(workid)
        if self._redis is not None:
            self._redis.delete(wid)

    # -- the faces (handlers.py decides; these run it) -------------------------

    def _gate(self, workid: object, on_error: OnError | str | None) -> tuple[TaskState, bool]:
        wid, state = self._core.begin(workid)
        if state is not None:  # the skip path of a closed task: no further call
            return self._core.gate(wid, state, on_error)
        return self._decide(wid, None, on_error)

    def _decide(
        self, wid: str, state: TaskState | None, on_error: OnError | str | None
    ) -> tuple[TaskState, bool]:
        outcome: Outcome
        if state is not None:
            outcome = state
        else:
            try:
                outcome = self._resolve(wid)
            except TaskStateUnknown as exc:
                outcome = exc
        return self._core.gate(wid, outcome, on_error)

    async def _agate(
        self, workid: object, on_error: OnError | str | None
    ) -> tuple[TaskState, bool]:
        # An async handler under a blocking guard: a local hit costs no thread.
        wid, state = self._core.begin(workid)
        if state is not None:
            return self._core.gate(wid, state, on_error)
        return await asyncio.to_thread(self._decide, wid, None, on_error)

    def _mark(self, wid: str) -> None:
        self.mark_closed(wid)

    async def _amark(self, wid: str) -> None:
        self.mark_closed(wid)

    skip_if_closed = GuardDecorator(sync_ok=True)
    """Decorator: run the handler only if its task is not closed (see README)."""

    @contextlib.contextmanager
    def task(
        self,
        workid: str | int,
        *,
        on_error: OnError | str | None = None,
        mark_closed_on_success: bool = False,
    ) -> Iterator[TaskHandle]:
        """``with guard.task(workid) as t: if t.skip: return ...``. The handle has
        ``state``, ``closed`` and ``skip``. Raises the lookup error under
        ``on_error="raise"`` and :class:`InvalidWorkId` always."""
        state, skip = self._gate(workid, on_error)
        yield TaskHandle(state, skip)
        if mark_closed_on_success and not skip:
            self.mark_closed(state.workid)

    def open_only(
        self,
        tasks: Iterable[T],
        workid: WorkidSpec = None,
        *,
        batch_size: int = 1,
        on_skip: OnSkipTask[T] | None = None,
        on_error: OnError | str | None = None,
    ) -> Iterator[T]:
        """Yield the tasks that are still open, lazily, in input order, checking
        ``batch_size`` at a time. ``workid`` is a callable over one task (default:
        the task itself, its ``workid`` key or attribute)."""
        locate = make_task_workid(workid)
        policy = self._core.policy(on_error)
        source = iter(tasks)
        while True:
            chunk, wids, stop = take_batch(source, batch_size, locate)
            if chunk:
                batch = self._check_batch(wids, validated=True, states=False)
                yield from decide_batch(self._core, chunk, wids, batch, on_skip, policy)
            if stop is not None:
                if isinstance(stop, StopIteration):
                    return
                raise stop

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Release connection pools and threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._owns_transport:
            self._transport.close()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> TaskGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
