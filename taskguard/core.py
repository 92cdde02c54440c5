"""The decision core both guards share. No I/O happens here.

A check is a short sequence, run by :class:`~taskguard.TaskGuard` with blocking
calls and by :class:`~taskguard.AsyncTaskGuard` with ``await``::

    workid, state = core.begin(workid)        # validate, count, in-process tier
    if state is None and redis:               # Redis tier: one GET / MGET
        state = core.from_redis(workid, redis.get(core_key))
    if state is None:                         # the service, single-flight, retried
        state = core.answered(workid, closed)   # remembered in-process
        redis.put(workid, closed)             # and shared

Everything that is *decided* (which tier answers, what is cached for how long,
which policy applies to a failed lookup, which tasks a batch still has to ask
about) is decided here, once, for both drivers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from itertools import repeat

from taskguard.breaker import Breaker, Stats
from taskguard.cache.memory import LocalCache
from taskguard.errors import CircuitOpen, LookupFailed, TaskStateUnknown
from taskguard.lookup import RetryPolicy
from taskguard.protocol import RequestFactory
from taskguard.settings import TaskGuardSettings
from taskguard.state import (
    OnError,
    Origin,
    TaskState,
    as_on_error,
    validate_workid,
    validate_workids,
)

__all__ = ["Batch", "GuardCore", "Outcome"]

log = logging.getLogger("taskguard")

_new_state = tuple.__new__  # TaskState(...) without NamedTuple's Python-level __new__
_redis_state = functools.partial(tuple.__new__, TaskState)  # the same, callable from map()
_LOCAL, _REDIS, _SERVICE, _ERROR = Origin.LOCAL, Origin.REDIS, Origin.SERVICE, Origin.ERROR

Outcome = TaskState | TaskStateUnknown
"""What one lookup in a batch ended with: an answer, or why there is none."""


class Batch:
    """One ``check_many``: every unique valid workid, in input order, with what is
    known of it (None until a tier answers; a bare bool for a Redis answer when
    :meth:`GuardCore.batch_from_redis` was asked not to build states), and the
    workids still to look up."""

    __slots__ = ("failed", "misses", "outcomes")

    def __init__(self, outcomes: dict[str, Outcome | bool | None], misses: list[str]) -> None:
        self.outcomes = outcomes
        self.misses = misses
        self.failed = False


class GuardCore:
    """Settings-derived decisions and the in-process state of one guard."""

    def __init__(self, settings: TaskGuardSettings, *, shared_cache: bool) -> None:
        self.settings = settings
        self.stats = Stats()
        self.local = LocalCache(settings.local_cache_size)
        # local_cache_size=0 turns the tier off: the hot paths then skip it
        # rather than call into a cache that can only miss.
        self.local_on = settings.local_cache_size > 0
        # In front of Redis the in-process tier only saves round trips, so it
        # keeps entries briefly; without Redis it *is* the cache.
        if shared_cache:
            self.local_closed_ttl = settings.local_cache_ttl
            self.local_open_ttl = min(settings.open_ttl, settings.local_cache_ttl)
        else:
            self.local_closed_ttl = settings.closed_ttl
            self.local_open_ttl = settings.open_ttl
        self.request = RequestFactory(
            source=settings.source, channel=settings.channel, topic=settings.topic
        )
        self.max_response_bytes = settings.max_response_bytes
        self.retry = RetryPolicy(settings, on_retry=self._count_retry)
        self.breaker = Breaker(
            threshold=settings.service_breaker_failures,
            cooldown=settings.service_breaker_cooldown,
        )
        self.on_error = settings.on_error

    def _count_retry(self) -> None:
        next(self.stats.retries)
        next(self.stats.service_calls)

    # -- one workid ---------------------------------------------------------

    def begin(self, workid: object) -> tuple[str, TaskState | None]:
        """Validate ``workid`` and ask the in-process tier."""
        wid = validate_workid(workid)
        next(self.stats.checks)
        if not self.local_on:
            return wid, None
        state = self.local.get(wid)
        if state is not None:
            next(self.stats.local_hits)
        return wid, state

    def from_redis(self, workid: str, closed: bool | None) -> TaskState | None:
        """What Redis said, remembered in-process; None on a miss."""
        if closed is None:
            return None
        next(self.stats.redis_hits)
        if self.local_on:
            self._remember(workid, closed)
        return _new_state(TaskState, (workid, closed, _REDIS))

    def answered(self, workid: str, closed: bool) -> TaskState:
        """The service's answer, remembered in-process."""
        self._remember(workid, closed)
        return _new_state(TaskState, (workid, closed, _SERVICE))

    def _remember(self, workid: str, closed: bool) -> None:
        self.local.put(workid, closed, self.local_closed_ttl if closed else self.local_open_ttl)

    def marked(self, workid: object) -> str:
        """``mark_closed``: validate, then record the close in-process."""
        wid = validate_workid(workid)
        self.local.put(wid, True, self.local_closed_ttl)
        return wid

    def forgotten(self, workid: object) -> str:
        """``forget``: validate, then drop the in-process entry."""
        wid = validate_workid(workid)
        self.local.delete(wid)
        return wid

    # -- the service call ------------------------------------------------------

    def settled(self, workid: str) -> TaskState | None:
        """The in-process tier again, once this check leads the lookup of ``workid``:
        another check may have finished one between this check's miss and now (its
        answer is remembered in-process before its single-flight entry goes away),
        and a closed task must not cost a second service call."""
        state = self.local.get(workid)
        if state is not None:
            next(self.stats.local_hits)
        return state

    def lookup_started(self, workid: str) -> None:
        """Count a lookup, or refuse it at once while the service breaker is open."""
        if not self.breaker.allow():
            next(self.stats.breaker_rejections)
            next(self.stats.errors)
            raise CircuitOpen(
                f"not asking CheckTaskState about workid {workid!r}: the last "
                f"{self.breaker.threshold} lookups failed, so the service is given "
                f"{self.breaker.cooldown:g} s to recover (service_breaker_cooldown)",
                workid=workid,
            )
        next(self.stats.lookups)
        next(self.stats.service_calls)

    def lookup_ended(self, workid: str, error: BaseException | None) -> None:
        """Feed the service breaker: only an unreachable service counts against it."""
        if error is None:
            self.breaker.success()
        elif isinstance(error, LookupFailed):
            next(self.stats.errors)
            if self.breaker.failure():
                log.warning(
                    "CheckTaskState failed %d lookups in a row (last: workid %r); "
                    "not asking it for %g s",
                    self.breaker.threshold,
                    workid,
                    self.breaker.cooldown,
                )
        elif isinstance(error, TaskStateUnknown):
            # It answered, if badly (Success: false, a 4xx, a malformed body): it is up.
            next(self.stats.errors)
            self.breaker.success()
        else:
            self.breaker.release_probe()  # cancelled, or a bug: no verdict on the service

    # -- many workids ------------------------------------------------------------

    def begin_batch(self, workids: Iterable[object], *, validated: bool = False) -> Batch:
        """Validate every workid (all before any I/O), dedupe, ask the in-process tier.
        ``validated``: the workids already passed :func:`validate_workid`."""
        if isinstance(workids, (str, bytes)):
            raise TypeError("check_many takes an iterable of workids, not one str")
        order = workids if validated else validate_workids(workids)
        # One dict dedupes and keeps input order; answers fill it in place.
        outcomes: dict[str, Outcome | bool | None] = dict.fromkeys(order)  # type: ignore[arg-type]
        self.stats.add("checks", len(outcomes))
        if not self.local_on:
            # Without duplicates the input list already is the list of misses.
            return Batch(outcomes, order if len(order) == len(outcomes) else list(outcomes))  # type: ignore[arg-type]
        misses: list[str] = []
        get = self.local.get
        for wid in outcomes:
            state = get(wid)
            if state is None:
                misses.append(wid)
            else:
                outcomes[wid] = state
        self.stats.add("local_hits", len(outcomes) - len(misses))
        return Batch(outcomes, misses)

    def batch_from_redis(
        self, batch: Batch, values: list[bool | None], *, states: bool = True
    ) -> None:
        """Fill what Redis knew (one MGET) into ``batch``; keep the rest as misses.

        ``states=False`` (``open_only``): when Redis knew every one, record the
        bare answers (``True``/``False``) and let the caller build a TaskState
        only where one is handed out: a TaskState per workid is most of a
        batch's cost."""
        outcomes = batch.outcomes
        misses = batch.misses
        if None not in values:  # the usual batch: Redis knew every one
            if self.local_on:
                for wid, closed in zip(misses, values, strict=True):
                    self._remember(wid, closed)  # type: ignore[arg-type]
            if states:  # C-level loops
                built = map(_redis_state, zip(misses, values, repeat(_REDIS)))
                outcomes.update(zip(misses, built))  # noqa: B905 - map over misses
            else:
                outcomes.update(zip(misses, values))  # noqa: B905 - bare answers
            self.stats.add("redis_hits", len(misses))
            batch.misses = []
            return
        remember = self._remember if self.local_on else None
        left: list[str] = []
        for wid, closed in zip(misses, values, strict=True):
            if closed is None:
                left.append(wid)
            else:
                if remember is not None:
                    remember(wid, closed)
                outcomes[wid] = _new_state(TaskState, (wid, closed, _REDIS))
        self.stats.add("redis_hits", len(misses) - len(left))
        batch.misses = left

    def batch_answers(self, batch: Batch, outcomes: list[Outcome]) -> list[tuple[str, bool]]:
        """Record the lookups of ``batch.misses``; return the answers to share in Redis."""
        fresh: list[tuple[str, bool]] = []
        for wid, outcome in zip(batch.misses, outcomes, strict=True):
            batch.outcomes[wid] = outcome
            if not isinstance(outcome, TaskState):
                batch.failed = True
            elif outcome.origin is _SERVICE:
                fresh.append((wid, outcome.closed))
        return fresh

    @staticmethod
    def batch_result(batch: Batch) -> dict[str, TaskState]:
        """``check_many``'s answer, or the first failure in input order."""
        if batch.failed:
            for outcome in batch.outcomes.values():
                if not isinstance(outcome, TaskState):
                    raise outcome  # type: ignore[misc]
        return batch.outcomes  # type: ignore[return-value]

    # -- what a handler face does with an answer ---------------------------------

    def gate(
        self, workid: str, outcome: Outcome, on_error: OnError | str | None
    ) -> tuple[TaskState, bool]:
        """Decide for a handler: ``(state, skip)``. A failed lookup is raised under
        ``on_error="raise"``, else turned into a state whose origin is ``error``."""
        if isinstance(outcome, TaskState):
            skip = outcome.closed
        else:
            policy = self.policy(on_error)
            if policy is OnError.RAISE:
                raise outcome
            # While the service breaker is open every check fails at once; its
            # opening was logged, so a fleet's refusals go to DEBUG, not a flood.
            level = logging.DEBUG if isinstance(outcome, CircuitOpen) else logging.WARNING
            log.log(
                level,
                "lookup of workid %r failed (%s); on_error=%r: %s the task",
                workid,
                outcome,
                policy.value,
                "skipping" if policy is OnError.SKIP else "processing",
            )
            skip = policy is OnError.SKIP
            outcome = _new_state(TaskState, (workid, False, _ERROR))
        next(self.stats.skips if skip else self.stats.processed)
        return outcome, skip

    def policy(self, on_error: OnError | str | None) -> OnError:
        """The ``on_error`` that applies: the face's own, else the settings'."""
        return self.on_error if on_error is None else as_on_error(on_error)
