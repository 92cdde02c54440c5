"""Scenario drivers: the service breaker in front of a dead connector, with a fleet asking.

See :mod:`reliability.scenarios` for how drivers, tests and the report fit together.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from reliability.scenarios import (
    JOIN_TIMEOUT,
    await_until,
    join_threads,
    run_threads,
    start_threads,
    wait_until,
)
from taskguard import (
    AsyncTaskGuard,
    CircuitOpen,
    LookupFailed,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
    TaskStateUnknown,
)
from taskguard.testing import FakeTaskStateService, Reply

# -- 3. the service breaker ---------------------------------------------------------------


def _answer(request: dict[str, Any], closed: set[str]) -> dict[str, Any]:
    workid = request["data"]["workid"]
    return {
        "subtopic": "CheckTaskState",
        "data": {"workid": workid, "isClosed": workid in closed, "Success": True},
    }


class Connector:
    """A blocking connector (a callable transport) that is dead or alive, and can
    hold every request until released. Counts the requests it receives."""

    def __init__(self, closed: Iterable[str] = ()) -> None:
        self.closed = set(closed)
        self.alive = False
        self.released = threading.Event()
        self.released.set()
        self._lock = threading.Lock()
        self._calls = 0

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._calls += 1
        if not self.released.wait(JOIN_TIMEOUT):
            raise TimeoutError("held too long")
        if not self.alive:
            raise ConnectionRefusedError("the connector is down")
        return _answer(request, self.closed)


class AsyncConnector:
    """:class:`Connector` for asyncio (an ``async`` callable transport)."""

    def __init__(self, closed: Iterable[str] = ()) -> None:
        self.closed = set(closed)
        self.alive = False
        self.released = asyncio.Event()
        self.released.set()
        self.calls = 0

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        await asyncio.wait_for(self.released.wait(), JOIN_TIMEOUT)
        if not self.alive:
            raise ConnectionRefusedError("the connector is down")
        return _answer(request, self.closed)


@dataclass
class BreakerResult:
    """The service breaker in front of a dead connector, with a fleet asking."""

    driver: str
    threshold: int
    cooldown: float
    attempts_to_open: int  # requests sent before the breaker opened
    opening_errors: list[str]  # what the lookups that opened it raised
    fleet_checks: int  # checks the fleet made during the cool-down
    fleet_outcomes: dict[str, int]  # what those checks ended with
    requests_during_cooldown: int  # must be 0
    slowest_rejection: float
    median_rejection: float
    probe_requests: int  # requests let through when the fleet asked at once after it
    probe_rejections: int  # checks refused meanwhile
    probe_total: int  # checks asked at once after the cool-down
    recovered: int  # checks answered after the probe succeeded
    stats: dict[str, int]


BREAKER_SETTINGS: dict[str, Any] = {
    "service_breaker_failures": 3,
    "service_breaker_cooldown": 1.0,
    "retry_attempts": 3,
    "retry_backoff": 0.001,
    "retry_backoff_max": 0.002,
}


def _outcome_name(outcome: object) -> str:
    if isinstance(outcome, TaskState):
        return f"state(closed={outcome.closed}, origin={outcome.origin.value})"
    return type(outcome).__name__


def breaker_fleet_sync(*, threads: int = 16) -> BreakerResult:
    """Open the breaker with failed lookups, let ``threads`` threads hammer the
    guard through every face during the cool-down, then ask all at once."""
    connector = Connector(closed=["closed-after"])
    settings = TaskGuardSettings(**BREAKER_SETTINGS)
    cooldown = settings.service_breaker_cooldown
    with TaskGuard(settings, transport=connector) as guard:
        opening: list[str] = []
        for i in range(settings.service_breaker_failures):
            try:
                guard.check(f"open-{i}")
            except TaskStateUnknown as exc:
                opening.append(type(exc).__name__)
        opened_at = time.monotonic()
        attempts_to_open = connector.calls
        faces = _sync_faces(guard)
        outcomes: list[tuple[str, float]] = []

        def hammer(n: int) -> None:
            i = 0
            while time.monotonic() < opened_at + 0.6 * cooldown:
                face = faces[(n + i) % len(faces)]
                started = time.monotonic()
                outcomes.append((face(f"fleet-{n}-{i}"), time.monotonic() - started))
                i += 1

        run_threads(hammer, threads)
        during = connector.calls - attempts_to_open
        wait_until(
            lambda: time.monotonic() > opened_at + cooldown + 0.05, JOIN_TIMEOUT, "cool-down"
        )
        connector.alive = True
        connector.released.clear()  # the probe is held on the wire while the fleet asks
        before_probe = connector.calls
        barrier = threading.Barrier(threads)
        probes: list[object] = []

        def ask_at_once(n: int) -> None:
            barrier.wait(JOIN_TIMEOUT)
            try:
                probes.append(guard.check(f"probe-{n}"))
            except TaskStateUnknown as exc:
                probes.append(exc)

        pool = start_threads(ask_at_once, threads)
        wait_until(lambda: len(probes) >= threads - 1, JOIN_TIMEOUT, "the fleet to be refused")
        probe_requests = connector.calls - before_probe
        connector.released.set()
        join_threads(pool)
        recovered = sum(
            guard.check(w).closed == (w == "closed-after") for w in ("closed-after", "open-after")
        )
        stats = guard.stats()
    return BreakerResult(
        driver=f"TaskGuard, {threads} threads",
        threshold=settings.service_breaker_failures,
        cooldown=cooldown,
        attempts_to_open=attempts_to_open,
        opening_errors=opening,
        fleet_checks=len(outcomes),
        fleet_outcomes=dict(collections.Counter(name for name, _ in outcomes)),
        requests_during_cooldown=during,
        slowest_rejection=max(took for _, took in outcomes),
        median_rejection=statistics.median(took for _, took in outcomes),
        probe_requests=probe_requests,
        probe_rejections=sum(isinstance(p, CircuitOpen) for p in probes),
        probe_total=len(probes),
        recovered=recovered,
        stats=stats,
    )


def _sync_faces(guard: TaskGuard) -> list[Callable[[str], str]]:
    """One way to ask per face; each returns what the caller saw, by name."""

    def check(workid: str) -> str:
        try:
            return _outcome_name(guard.check(workid))
        except TaskStateUnknown as exc:
            return type(exc).__name__

    def decorated(policy: str) -> Callable[[str], str]:
        @guard.skip_if_closed(on_error=policy, on_skip=lambda s: f"skipped {_outcome_name(s)}")
        def handler(workid: str) -> str:
            return "handler ran"

        def face(workid: str) -> str:
            try:
                return str(handler(workid))
            except TaskStateUnknown as exc:
                return type(exc).__name__

        return face

    def task(workid: str) -> str:
        with guard.task(workid, on_error="skip") as handle:
            return "task() skip" if handle.skip else "task() ran"

    def open_only(workid: str) -> str:
        return "open_only yielded" if list(guard.open_only([workid], on_error="process")) else "-"

    return [check, decorated("raise"), decorated("skip"), decorated("process"), task, open_only]


async def breaker_fleet_async(*, coroutines: int = 200) -> BreakerResult:
    """:func:`breaker_fleet_sync` with an ``AsyncTaskGuard`` and ``coroutines``."""
    connector = AsyncConnector(closed=["closed-after"])
    settings = TaskGuardSettings(**BREAKER_SETTINGS)
    cooldown = settings.service_breaker_cooldown
    async with AsyncTaskGuard(settings, transport=connector) as guard:
        opening: list[str] = []
        for i in range(settings.service_breaker_failures):
            try:
                await guard.check(f"open-{i}")
            except TaskStateUnknown as exc:
                opening.append(type(exc).__name__)
        opened_at = time.monotonic()
        attempts_to_open = connector.calls

        @guard.skip_if_closed(on_error="skip", on_skip=lambda s: f"skipped {_outcome_name(s)}")
        async def handler(workid: str) -> str:
            return "handler ran"

        outcomes: list[tuple[str, float]] = []

        async def hammer(n: int) -> None:
            i = 0
            while time.monotonic() < opened_at + 0.6 * cooldown:
                started = time.monotonic()
                name: str
                try:
                    if i % 2:
                        name = _outcome_name(await guard.check(f"fleet-{n}-{i}"))
                    else:
                        name = str(await handler(f"fleet-{n}-{i}"))
                except TaskStateUnknown as exc:
                    name = type(exc).__name__
                outcomes.append((name, time.monotonic() - started))
                i += 1
                await asyncio.sleep(0.001)

        await asyncio.wait_for(
            asyncio.gather(*(hammer(n) for n in range(coroutines))), JOIN_TIMEOUT
        )
        during = connector.calls - attempts_to_open
        await await_until(
            lambda: time.monotonic() > opened_at + cooldown + 0.05, JOIN_TIMEOUT, "cool-down"
        )
        connector.alive = True
        connector.released.clear()
        before_probe = connector.calls
        probes: list[object] = []

        async def ask(n: int) -> None:
            try:
                probes.append(await guard.check(f"probe-{n}"))
            except TaskStateUnknown as exc:
                probes.append(exc)

        tasks = [asyncio.create_task(ask(n)) for n in range(coroutines)]
        await await_until(
            lambda: len(probes) >= coroutines - 1, JOIN_TIMEOUT, "the fleet to be refused"
        )
        probe_requests = connector.calls - before_probe
        connector.released.set()
        await asyncio.wait_for(asyncio.gather(*tasks), JOIN_TIMEOUT)
        recovered = 0
        for w in ("closed-after", "open-after"):
            recovered += (await guard.check(w)).closed == (w == "closed-after")
        stats = guard.stats()
    return BreakerResult(
        driver=f"AsyncTaskGuard, {coroutines} coroutines",
        threshold=settings.service_breaker_failures,
        cooldown=cooldown,
        attempts_to_open=attempts_to_open,
        opening_errors=opening,
        fleet_checks=len(outcomes),
        fleet_outcomes=dict(collections.Counter(name for name, _ in outcomes)),
        requests_during_cooldown=during,
        slowest_rejection=max(took for _, took in outcomes),
        median_rejection=statistics.median(took for _, took in outcomes),
        probe_requests=probe_requests,
        probe_rejections=sum(isinstance(p, CircuitOpen) for p in probes),
        probe_total=len(probes),
        recovered=recovered,
        stats=stats,
    )


@dataclass
class FlakyBreakerResult:
    """A 30%-503 service, in-process, asked one lookup at a time."""

    lookups: int
    requests: int
    longest_failed_attempt_run: int  # consecutive failed requests the service answered
    failed_lookups: int  # lookups whose every attempt failed
    longest_failed_lookup_run: int
    threshold: int
    breaker_rejections: int


class _SequenceService(FakeTaskStateService):
    """Remembers, in order, whether each request it answered failed."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[bool] = []

    def handle(self, body: bytes, headers: Any) -> Reply:
        reply = super().handle(body, headers)
        self.failed.append(reply.status != 200)
        return reply


def _longest_run(flags: Iterable[bool]) -> int:
    longest = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


def flaky_never_trips(*, lookups: int = 3000, seed: int = 11) -> FlakyBreakerResult:
    """The breaker counts failed *lookups*: a service failing 30% of its requests
    makes many runs of failed attempts longer than the threshold, and the breaker
    must not open for them."""
    service = _SequenceService()
    service.set_fault_rates(error_rate=0.3, seed=seed)
    settings = TaskGuardSettings(
        service_breaker_failures=3,
        service_breaker_cooldown=30.0,
        retry_attempts=4,
        retry_backoff=0.0,
        retry_backoff_max=0.0,
    )
    failed: list[bool] = []
    with TaskGuard(settings, transport=service) as guard:
        for n in range(lookups):
            try:
                guard.check(f"flaky-{n}")
                failed.append(False)
            except LookupFailed:
                failed.append(True)
        stats = guard.stats()
    return FlakyBreakerResult(
        lookups=lookups,
        requests=service.requests,
        longest_failed_attempt_run=_longest_run(service.failed),
        failed_lookups=sum(failed),
        longest_failed_lookup_run=_longest_run(failed),
        threshold=settings.service_breaker_failures,
        breaker_rejections=stats["breaker_rejections"],
    )
