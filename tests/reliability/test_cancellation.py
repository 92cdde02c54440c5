"""Cancelling an async check: never retried, never swallowed, nothing left stuck.

``task.cancel()``, ``asyncio.wait_for`` and ``asyncio.timeout`` around a check
(in flight on the wire, or waiting out a backoff) must raise at the caller at
once, send no further request, leave no waiter stuck on the single-flight entry
(the next check of that workid makes a fresh call and returns), and count
neither as a failed lookup nor against the service breaker.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from reliability.scenarios import await_until
from taskguard import AsyncTaskGuard, LookupFailed, TaskGuardSettings, TaskState
from taskguard.testing import FakeTaskStateService

SLOW = 5.0  # the service's latency while a check is to be cancelled


@pytest.fixture
def service() -> FakeTaskStateService:
    service = FakeTaskStateService(closed=["c-1", "c-2"])
    service.latency = SLOW
    return service


GuardFactory = Callable[..., AsyncTaskGuard]


@pytest.fixture(params=["in-process", "http"])
async def make_guard(
    request: pytest.FixtureRequest, service: FakeTaskStateService
) -> AsyncIterator[GuardFactory]:
    """Builds guards asking ``service`` in-process or over loopback HTTP (aiohttp)."""
    made: list[AsyncTaskGuard] = []
    with service.serve() as running:

        def make(**overrides: Any) -> AsyncTaskGuard:
            options = {
                "request_timeout": 10.0,
                "retry_deadline": 20.0,
                "retry_backoff": 0.001,
                "retry_backoff_max": 0.002,
                **overrides,
            }
            if request.param == "http":
                guard = AsyncTaskGuard(TaskGuardSettings(service_url=running.url, **options))
            else:
                guard = AsyncTaskGuard(TaskGuardSettings(**options), transport=service)
            made.append(guard)
            return guard

        yield make
        for guard in made:
            await guard.aclose()


async def assert_fresh_call_completes(
    guard: AsyncTaskGuard, service: FakeTaskStateService, workid: str = "c-1"
) -> None:
    """Nothing is stuck on the single-flight entry: the next check asks again."""
    before = service.requests
    service.latency = 0.0
    state = await asyncio.wait_for(guard.check(workid), 5)
    assert state == TaskState(workid, True, "service")  # type: ignore[arg-type]
    assert service.requests == before + 1


async def assert_not_retried(service: FakeTaskStateService, requests: int = 1) -> None:
    await asyncio.sleep(0.3)  # a retry, had there been one, would have been sent by now
    assert service.requests == requests


async def test_task_cancel_is_not_retried_or_swallowed(
    make_guard: GuardFactory, service: FakeTaskStateService
) -> None:
    guard = make_guard()
    task = asyncio.create_task(guard.check("c-1"))
    await await_until(lambda: service.requests == 1, 5, "the request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_not_retried(service)
    stats = guard.stats()
    assert (stats["retries"], stats["errors"]) == (0, 0)
    await assert_fresh_call_completes(guard, service)


@pytest.mark.parametrize(
    "how",
    [
        "wait_for",
        pytest.param(
            "timeout",
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: 3.11+"),
        ),
    ],
)
async def test_a_caller_timeout_surfaces_as_timeout_error(
    make_guard: GuardFactory, service: FakeTaskStateService, how: str
) -> None:
    guard = make_guard()

    async def bounded() -> None:
        if how == "wait_for":
            await asyncio.wait_for(guard.check("c-1"), 0.2)
        else:
            async with asyncio.timeout(0.2):  # type: ignore[attr-defined,unused-ignore]
                await guard.check("c-1")

    with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself since 3.11
        await bounded()
    await assert_not_retried(service)
    await assert_fresh_call_completes(guard, service)


async def test_cancelling_one_waiter_leaves_the_others_their_answer(
    make_guard: GuardFactory, service: FakeTaskStateService
) -> None:
    service.latency = 0.5
    guard = make_guard()
    first = asyncio.create_task(guard.check("c-1"))
    second = asyncio.create_task(guard.check("c-1"))
    await await_until(lambda: service.requests == 1, 5, "the request")
    first.cancel()
    assert (await asyncio.wait_for(second, 5)).closed
    with pytest.raises(asyncio.CancelledError):
        await first
    assert service.requests == 1
    assert guard.stats()["coalesced"] == 1


async def test_when_every_waiter_leaves_the_call_stops_and_the_next_starts_afresh(
    make_guard: GuardFactory, service: FakeTaskStateService
) -> None:
    guard = make_guard()
    waiters = [asyncio.create_task(guard.check("c-1")) for _ in range(3)]
    await await_until(lambda: service.requests == 1, 5, "the request")
    for waiter in waiters:
        waiter.cancel()
    for waiter in waiters:
        with pytest.raises(asyncio.CancelledError):
            await waiter
    await assert_not_retried(service)
    await assert_fresh_call_completes(guard, service)


async def test_cancelling_during_a_backoff_sends_nothing_more(
    make_guard: GuardFactory, service: FakeTaskStateService
) -> None:
    service.latency = 0.0
    service.fail_next(1, 503, retry_after=5)
    guard = make_guard()
    task = asyncio.create_task(guard.check("c-1"))
    await await_until(lambda: service.requests == 1, 5, "the first attempt")
    await asyncio.sleep(0.1)  # now waiting out Retry-After
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_not_retried(service)
    await assert_fresh_call_completes(guard, service)


async def test_a_cancelled_lookup_does_not_count_against_the_breaker(
    make_guard: GuardFactory, service: FakeTaskStateService
) -> None:
    guard = make_guard(service_breaker_failures=1, service_breaker_cooldown=30.0)
    task = asyncio.create_task(guard.check("c-1"))
    await await_until(lambda: service.requests == 1, 5, "the request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_fresh_call_completes(guard, service, "c-2")  # not CircuitOpen
    assert guard.stats()["breaker_rejections"] == 0


async def test_a_cancelled_probe_lets_the_next_check_probe(
    make_guard: GuardFactory, service: FakeTaskStateService
) -> None:
    service.latency = 0.0
    service.fail_next(2, 503)
    guard = make_guard(service_breaker_failures=1, service_breaker_cooldown=0.2, retry_attempts=2)
    with pytest.raises(LookupFailed, match="attempts failed"):
        await guard.check("c-1")  # opens the breaker
    await asyncio.sleep(0.3)  # the cool-down ends: the next check is the one probe
    service.latency = SLOW
    probe = asyncio.create_task(guard.check("c-1"))
    await await_until(lambda: service.requests == 3, 5, "the probe")
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await assert_fresh_call_completes(guard, service, "c-2")  # it may probe: no CircuitOpen


@pytest.mark.parametrize("policy", ["skip", "process"])
async def test_no_policy_swallows_a_cancellation(
    make_guard: GuardFactory, service: FakeTaskStateService, policy: str
) -> None:
    guard = make_guard(on_error=policy)
    ran: list[str] = []
    skipped: list[TaskState] = []

    @guard.skip_if_closed(on_skip=skipped.append)
    async def handle(workid: str) -> None:
        ran.append(workid)

    task = asyncio.create_task(handle("c-1"))
    await await_until(lambda: service.requests == 1, 5, "the request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == []
    assert skipped == []
    assert guard.stats()["skips"] + guard.stats()["processed"] == 0
