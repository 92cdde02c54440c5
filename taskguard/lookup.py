"""Asking the service: retries with backoff, a deadline, and single-flight.

:class:`RetryPolicy` decides (no I/O): how long an attempt may take, how long to
wait before the next one, when to give up. Tenacity runs the schedule, built
once from settings; the same definition drives the sync and the async loop.

The first attempt runs outside tenacity: most lookups succeed at once, and the
hot path should not pay for retry machinery it does not use (DESIGN section 7).
Only a failed first attempt hands the rest of the schedule to tenacity.

Single-flight: concurrent lookups of one workid in one process share one
service call (threads: :class:`SingleFlight`; asyncio: :class:`AsyncSingleFlight`).
A failure reaches every waiter and is never cached.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, RetryError, Retrying, retry_if_exception

from taskguard.errors import LookupFailed, TransportError
from taskguard.settings import TaskGuardSettings

__all__ = ["AsyncSingleFlight", "RetryPolicy", "SingleFlight"]

T = TypeVar("T")

# An attempt shorter than this is not worth starting: it would only time out.
_MIN_ATTEMPT = 0.005


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.retryable


class RetryPolicy:
    """The retry schedule of one guard: pure decisions plus tenacity runners.

    * at most ``retry_attempts`` attempts;
    * between them, exponential backoff with full jitter from ``retry_backoff``
      up to ``retry_backoff_max``, but never less than a ``Retry-After`` the
      server asked for;
    * never past ``retry_deadline`` in total: a wait that would cross it ends the
      lookup, and the last attempt's timeout is cut to what is left;
    * only retryable :class:`TransportError` s are retried.
    """

    def __init__(self, settings: TaskGuardSettings, *, on_retry: Callable[[], Any]) -> None:
        self.attempts = settings.retry_attempts
        self.deadline = settings.retry_deadline
        self.request_timeout = settings.request_timeout
        self.backoff_base = settings.retry_backoff
        self.backoff_max = settings.retry_backoff_max
        self._on_retry = on_retry
        # One definition, two runners. The attempt function receives the
        # lookup's start time as its first argument, so the stop rule can
        # measure the deadline from the very first attempt.
        schedule: dict[str, Any] = {
            "retry": retry_if_exception(_retryable),
            "wait": self._tenacity_wait,
            "stop": self._tenacity_stop,
            "reraise": False,
        }
        self._sync = Retrying(sleep=time.sleep, **schedule)
        self._async = AsyncRetrying(**schedule)

    # -- pure decisions ---------------------------------------------------

    def timeout(self, started: float) -> float:
        """The timeout for an attempt starting now: cut to fit the deadline."""
        left = self.deadline - (time.monotonic() - started)
        return max(min(self.request_timeout, left), _MIN_ATTEMPT)

    def backoff(self, failed_attempts: int, exc: BaseException | None) -> float:
        """The wait after ``failed_attempts`` attempts, honouring ``Retry-After``."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (failed_attempts - 1))
        wait = random.uniform(0, ceiling)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and retry_after > wait:
            wait = retry_after
        return wait

    def gives_up(self, failed_attempts: int, wait: float, started: float) -> bool:
        """Stop when attempts are spent or the next attempt could not start in time."""
        if failed_attempts >= self.attempts:
            return True
        return time.monotonic() - started + wait + _MIN_ATTEMPT >= self.deadline

    def exhausted(self, workid: str, attempts: int, last: BaseException) -> LookupFailed:
        """The error for a lookup that ran out of attempts or time."""
        if isinstance(last, TransportError) and not last.retryable:
            why = "the transport failed in a way retrying cannot fix"
        elif attempts >= self.attempts:
            why = f"all {attempts} attempts failed"
        else:
            why = f"retry_deadline ({self.deadline:g} s) ran out after {attempts} attempt(s)"
        return LookupFailed(
            f"could not look up workid {workid!r}: {why}; last error: {last}. "
            "The task was not skipped; check that the CheckTaskState service is reachable",
            workid=workid,
            attempts=attempts,
        )

    # -- tenacity hooks (attempt numbers there start after our first try) --

    def _tenacity_wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.backoff(state.attempt_number + 1, exc)

    def _tenacity_stop(self, state: RetryCallState) -> bool:
        started: float = state.args[0]
        return self.gives_up(state.attempt_number + 1, state.upcoming_sleep, started)

    # -- the two drivers ----------------------------------------------------

    def call(self, attempt: Callable[[float], T], workid: str) -> T:
        """Run ``attempt(timeout)`` with retries, blocking. Raises ``LookupFailed``
        when retries run out; other errors (``ServiceError``, ``ProtocolError``)
        propagate at once."""
        started = time.monotonic()
        try:
            return attempt(self.timeout(started))
        except TransportError as exc:
            first = exc
        wait = self._first_wait(first, started, workid)
        time.sleep(wait)
        try:
            result: T = self._sync.copy()(self._again, started, attempt)
            return result
        except RetryError as err:
            raise self._from_retry_error(err, workid) from err.last_attempt.exception()
        except TransportError as exc:  # not retryable
            raise self.exhausted(workid, 2, exc) from exc

    async def acall(self, attempt: Callable[[float], Awaitable[T]], workid: str) -> T:
        """The asyncio twin of :meth:`call` (same schedule, same errors).
        Cancellation is never retried or swallowed."""
        started = time.monotonic()
        try:
            return await attempt(self.timeout(started))
        except TransportError as exc:
            first = exc
        wait = self._first_wait(first, started, workid)
        await asyncio.sleep(wait)
        try:
            return await self._async.copy()(self._aagain, started, attempt)
        except RetryError as err:
            raise self._from_retry_error(err, workid) from err.last_attempt.exception()
        except TransportError as exc:
            raise self.exhausted(workid, 2, exc) from exc

    def _first_wait(self, first: TransportError, started: float, workid: str) -> float:
        if not first.retryable:
            raise self.exhausted(workid, 1, first) from first
        wait = self.backoff(1, first)
        if self.gives_up(1, wait, started):
            raise self.exhausted(workid, 1, first) from first
        return wait

    def _again(self, started: float, attempt: Callable[[float], T]) -> T:
        self._on_retry()
        return attempt(self.timeout(started))

    async def _aagain(self, started: float, attempt: Callable[[float], Awaitable[T]]) -> T:
        self._on_retry()
        return await attempt(self.timeout(started))

    def _from_retry_error(self, err: RetryError, workid: str) -> LookupFailed:
        last = err.last_attempt.exception()
        assert last is not None  # tenacity only gives up after a failed attempt
        return self.exhausted(workid, err.last_attempt.attempt_number + 1, last)


class _Flight:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        # A plain lock held by the leader is the cheapest "done" signal:
        # waiters acquire and release it once the leader lets go.
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Threads asking about the same key at once share one call."""

    def __init__(self, on_coalesce: Callable[[], Any]) -> None:
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._on_coalesce = on_coalesce

    def run(self, key: str, fn: Callable[[], T]) -> T:
        """Return ``fn()``, or the result of a call already running for ``key``."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            self._on_coalesce()
            with flight.done:
                pass
            if flight.error is not None:
                raise flight.error
            result: T = flight.result
            return result
        try:
            flight.result = fn()
            return flight.result  # type: ignore[no-any-return]
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.release()


class _AsyncFlight(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


class AsyncSingleFlight:
    """Coroutines asking about the same key at once share one call.

    The call runs in its own task so that a cancelled waiter does not cancel
    it for the others; when the last waiter leaves, the call is cancelled.
    Belongs to one event loop.
    """

    def __init__(self, on_coalesce: Callable[[], Any]) -> None:
        self._flights: dict[str, _AsyncFlight[Any]] = {}
        self._on_coalesce = on_coalesce

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Return ``await fn()``, or the result of a call already running for ``key``."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _AsyncFlight(asyncio.ensure_future(fn()))
            self._flights[key] = flight
            flight.task.add_done_callback(functools.partial(self._landed, key, flight))
        else:
            self._on_coalesce()
        flight.waiters += 1
        try:
            result: T = await asyncio.shield(flight.task)
            return result
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Everyone left (cancelled): stop the call, and make sure a
                # newcomer starts a fresh one instead of joining a dying task.
                if self._flights.get(key) is flight:
                    del self._flights[key]
                flight.task.cancel()

    def _landed(self, key: str, flight: _AsyncFlight[Any], _task: object) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # mark retrieved: waiters already got it
