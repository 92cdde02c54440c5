"""Scenario drivers: a flaky CheckTaskState service over HTTP, and a dead one.

See :mod:`reliability.scenarios` for how drivers, tests and the report fit together.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from reliability.scenarios import JOIN_TIMEOUT
from taskguard import (
    AsyncTaskGuard,
    LookupFailed,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
    TaskStateUnknown,
)
from taskguard.testing import FakeTaskStateService, Reply

# -- 2. a flaky service over HTTP ---------------------------------------------------------


class CountingService(FakeTaskStateService):
    """The reference service, also counting what it answered: ``ok``, each HTTP
    error status, ``timeout`` (held, never answered)."""

    def __init__(self, closed: Iterable[str | int] = (), **kwargs: Any) -> None:
        super().__init__(closed, **kwargs)
        self.replies: collections.Counter[str] = collections.Counter()
        self._replies_lock = threading.Lock()

    def handle(self, body: bytes, headers: Any) -> Reply:
        reply = super().handle(body, headers)
        if reply.hang is not None:
            kind = "timeout"
        elif reply.status == 200 and b'"Success":true' in reply.body:
            kind = "ok"
        else:
            kind = str(reply.status)
        with self._replies_lock:
            self.replies[kind] += 1
        return reply


@dataclass
class FlakyResult:
    """Checks against a service that fails a share of its requests."""

    driver: str
    checks: int
    answered: int  # checks that got the right answer
    failed: dict[str, int]  # error class name -> checks that raised it
    wrong: int  # answers that disagree with the service
    requests: int  # attempts the service received
    replies: dict[str, int]  # what it answered ("ok", "503", "timeout"...)
    slowest: float  # the slowest check, seconds
    deadline: float  # retry_deadline
    stats: dict[str, int]

    def share(self, kind: str) -> float:
        return self.replies.get(kind, 0) / max(1, self.requests)


FLAKY_SETTINGS: dict[str, Any] = {
    "request_timeout": 0.25,
    "retry_attempts": 16,
    "retry_backoff": 0.005,
    "retry_backoff_max": 0.04,
    "retry_deadline": 4.0,
    "service_breaker_failures": 5,
}


def _tally(
    results: Sequence[tuple[str, object, float]], service: CountingService
) -> tuple[int, dict[str, int], int, float]:
    answered = wrong = 0
    failed: collections.Counter[str] = collections.Counter()
    for workid, outcome, _took in results:
        if isinstance(outcome, TaskState):
            if outcome.closed == service.is_closed(workid):
                answered += 1
            else:
                wrong += 1
        else:
            failed[type(outcome).__name__] += 1
    return answered, dict(failed), wrong, max((took for *_, took in results), default=0.0)


def flaky_service_sync(
    *,
    checks: int = 320,
    threads: int = 8,
    error_rate: float = 0.3,
    timeout_rate: float = 0.1,
    seed: int = 20240501,
    **overrides: Any,
) -> FlakyResult:
    """``threads`` threads check ``checks`` distinct workids (no cache can help) over
    HTTP against the reference service failing ``error_rate`` of its requests with
    503 and holding ``timeout_rate`` of them past ``request_timeout``."""
    options = {**FLAKY_SETTINGS, **overrides}
    service = CountingService(closed=[f"f-{n}" for n in range(0, checks, 3)])
    service.set_fault_rates(
        error_rate, timeout_rate, seed=seed, hang=2 * options["request_timeout"]
    )
    results: list[tuple[str, object, float]] = []
    with service.serve() as running:
        settings = TaskGuardSettings(service_url=running.url, **options)
        with TaskGuard(settings) as guard:

            def worker(mine: list[str]) -> None:
                for workid in mine:
                    started = time.monotonic()
                    outcome: object
                    try:
                        outcome = guard.check(workid)
                    except TaskStateUnknown as exc:
                        outcome = exc
                    results.append((workid, outcome, time.monotonic() - started))

            workids = [f"f-{n}" for n in range(checks)]
            pool = [
                threading.Thread(target=worker, args=(workids[i::threads],), daemon=True)
                for i in range(threads)
            ]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join(JOIN_TIMEOUT)
            if any(thread.is_alive() for thread in pool):
                raise TimeoutError("a checking thread is still running: a check hung")
            stats = guard.stats()
    answered, failed, wrong, slowest = _tally(results, service)
    return FlakyResult(
        driver=f"TaskGuard (urllib3), {threads} threads",
        checks=len(results),
        answered=answered,
        failed=failed,
        wrong=wrong,
        requests=service.requests,
        replies=dict(service.replies),
        slowest=slowest,
        deadline=settings.retry_deadline,
        stats=stats,
    )


async def flaky_service_async(
    *,
    checks: int = 320,
    error_rate: float = 0.3,
    timeout_rate: float = 0.1,
    seed: int = 20240502,
    **overrides: Any,
) -> FlakyResult:
    """:func:`flaky_service_sync` with an ``AsyncTaskGuard`` (aiohttp): every
    check runs at once, ``lookup_concurrency`` of them on the wire."""
    options = {**FLAKY_SETTINGS, **overrides}
    service = CountingService(closed=[f"g-{n}" for n in range(0, checks, 3)])
    service.set_fault_rates(
        error_rate, timeout_rate, seed=seed, hang=2 * options["request_timeout"]
    )
    with service.serve() as running:
        settings = TaskGuardSettings(service_url=running.url, **options)
        async with AsyncTaskGuard(settings) as guard:

            async def one(workid: str) -> tuple[str, object, float]:
                started = time.monotonic()
                outcome: object
                try:
                    outcome = await guard.check(workid)
                except TaskStateUnknown as exc:
                    outcome = exc
                return workid, outcome, time.monotonic() - started

            results = await asyncio.wait_for(
                asyncio.gather(*(one(f"g-{n}") for n in range(checks))), JOIN_TIMEOUT
            )
            stats = guard.stats()
    answered, failed, wrong, slowest = _tally(results, service)
    return FlakyResult(
        driver="AsyncTaskGuard (aiohttp), all at once",
        checks=len(results),
        answered=answered,
        failed=failed,
        wrong=wrong,
        requests=service.requests,
        replies=dict(service.replies),
        slowest=slowest,
        deadline=settings.retry_deadline,
        stats=stats,
    )


@dataclass
class DeadServiceResult:
    """Checks against a service that fails every request."""

    fault: str  # "503" or "timeout"
    checks: int
    lookup_failed: int  # checks that ended with LookupFailed
    other: dict[str, int]  # anything else they ended with
    slowest: float
    deadline: float
    requests: int


def dead_service(
    fault: str, *, checks: int = 16, threads: int = 8, deadline: float = 0.6
) -> DeadServiceResult:
    """Every request fails (503, or held past ``request_timeout``): every check
    must end with ``LookupFailed`` within ``retry_deadline``."""
    service = CountingService()
    timeout = 0.15
    if fault == "503":
        service.set_fault_rates(error_rate=1.0, seed=1)
    else:
        service.set_fault_rates(timeout_rate=1.0, seed=1, hang=1.0)
    settings = {
        "request_timeout": timeout,
        "retry_attempts": 50,  # the deadline, not the attempts, must end each lookup
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.05,
        "retry_deadline": deadline,
        "service_breaker_failures": 0,
    }
    outcomes: list[tuple[object, float]] = []
    with (
        service.serve() as running,
        TaskGuard(TaskGuardSettings(service_url=running.url, **settings)) as guard,
    ):

        def worker(n: int) -> None:
            for i in range(checks // threads):
                started = time.monotonic()
                try:
                    outcome: object = guard.check(f"dead-{n}-{i}")
                except TaskStateUnknown as exc:
                    outcome = exc
                outcomes.append((outcome, time.monotonic() - started))

        pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(JOIN_TIMEOUT)
        if any(thread.is_alive() for thread in pool):
            raise TimeoutError("a checking thread is still running: a check hung")
    other: collections.Counter[str] = collections.Counter(
        type(o).__name__ for o, _ in outcomes if not isinstance(o, LookupFailed)
    )
    return DeadServiceResult(
        fault=fault,
        checks=len(outcomes),
        lookup_failed=sum(isinstance(o, LookupFailed) for o, _ in outcomes),
        other=dict(other),
        slowest=max(took for _, took in outcomes),
        deadline=deadline,
        requests=service.requests,
    )
