"""A flaky CheckTaskState service over loopback HTTP: 30% 503s, 10% timeouts.

Every check still gets the right answer within ``retry_deadline``; a service
that fails every request ends every check with ``LookupFailed`` within the
deadline; each ``on_error`` policy does what it says; ``Retry-After`` is
honoured, but never past the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from reliability.faults import (
    CountingService,
    FlakyResult,
    dead_service,
    flaky_service_async,
    flaky_service_sync,
)
from taskguard import (
    AsyncTaskGuard,
    LookupFailed,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
)
from taskguard.testing import RunningService

MARGIN = 0.5  # scheduling slack on top of a promised bound, seconds


def assert_all_answered(result: FlakyResult) -> None:
    assert result.failed == {}, f"checks failed: {result.failed}"
    assert result.wrong == 0
    assert result.answered == result.checks == 320
    assert result.slowest <= result.deadline, f"a check took {result.slowest:.2f} s"
    # The faults were really injected, in the proportions asked for...
    assert 0.22 <= result.share("503") <= 0.38, result.replies
    assert 0.05 <= result.share("timeout") <= 0.16, result.replies
    # ...and every one of them was absorbed by a retry (under load an attempt can
    # also time out before the service sees it: more retries, never fewer).
    assert result.stats["retries"] >= result.requests - result.checks
    assert result.stats["service_calls"] == result.checks + result.stats["retries"]
    assert result.stats["errors"] == 0
    assert result.stats["breaker_rejections"] == 0


def test_every_sync_check_succeeds_against_a_flaky_service() -> None:
    assert_all_answered(flaky_service_sync(checks=320, threads=8))


async def test_every_async_check_succeeds_against_a_flaky_service() -> None:
    assert_all_answered(await flaky_service_async(checks=320))


@pytest.mark.parametrize("fault", ["503", "timeout"])
def test_a_dead_service_ends_every_check_within_the_deadline(fault: str) -> None:
    result = dead_service(fault, checks=16, threads=8, deadline=0.6)
    assert result.lookup_failed == result.checks == 16
    assert result.other == {}
    assert result.slowest <= result.deadline + MARGIN, f"{result.slowest:.3f} s"
    # The deadline, not the 50 allowed attempts, ended each lookup.
    assert result.requests < 16 * 50


# -- on_error: each policy does exactly what it says -------------------------------------------


@pytest.fixture
def dead() -> Iterator[RunningService]:
    service = CountingService()
    service.set_fault_rates(error_rate=1.0, seed=3)
    with service.serve() as running:
        yield running


def _settings(url: str, **extra: Any) -> TaskGuardSettings:
    return TaskGuardSettings(
        service_url=url,
        retry_attempts=2,
        retry_backoff=0.001,
        retry_backoff_max=0.002,
        service_breaker_failures=0,
        **extra,
    )


def _enter(context: AbstractContextManager[object]) -> None:
    with context:
        raise AssertionError("the body ran")


@pytest.mark.parametrize("policy", ["raise", "process", "skip"])
def test_each_policy_does_what_it_says_sync(dead: RunningService, policy: str) -> None:
    ran: list[str] = []
    skipped: list[TaskState] = []
    with TaskGuard(_settings(dead.url, on_error=policy)) as guard:

        @guard.skip_if_closed(on_skip=skipped.append)
        def handle(workid: str) -> str:
            ran.append(workid)
            return "ran"

        if policy == "raise":
            with pytest.raises(LookupFailed) as caught:
                handle("d-1")
            assert caught.value.__cause__ is not None  # the last attempt's error
            with pytest.raises(LookupFailed):
                _enter(guard.task("d-2"))
            with pytest.raises(LookupFailed):
                list(guard.open_only(["d-3"]))
            assert ran == []
            assert skipped == []
        elif policy == "process":
            assert handle("d-1") == "ran"
            with guard.task("d-2") as task:
                assert not task.skip
                assert not task.closed
                assert task.state == TaskState("d-2", False, "error")  # type: ignore[arg-type]
            assert list(guard.open_only(["d-3"])) == ["d-3"]
            assert ran == ["d-1"]
            assert skipped == []
        else:
            assert handle("d-1") is None
            with guard.task("d-2") as task:
                assert task.skip
                assert not task.closed
            assert list(guard.open_only(["d-3"])) == []
            assert ran == []
            assert skipped == [TaskState("d-1", False, "error")]  # type: ignore[arg-type]
        # The questions always raise, whatever the policy.
        with pytest.raises(LookupFailed):
            guard.check("d-4")
        with pytest.raises(LookupFailed):
            guard.check_many(["d-5", "d-6"])
        stats = guard.stats()
    assert stats["skips"] == (3 if policy == "skip" else 0)
    assert stats["processed"] == (3 if policy == "process" else 0)
    assert stats["errors"] == stats["lookups"]


@pytest.mark.parametrize("policy", ["raise", "process", "skip"])
async def test_each_policy_does_what_it_says_async(dead: RunningService, policy: str) -> None:
    ran: list[str] = []
    skipped: list[TaskState] = []
    async with AsyncTaskGuard(_settings(dead.url, on_error=policy)) as guard:

        @guard.skip_if_closed(on_skip=skipped.append)
        async def handle(workid: str) -> str:
            ran.append(workid)
            return "ran"

        if policy == "raise":
            with pytest.raises(LookupFailed):
                await handle("d-1")
            assert ran == []
            assert skipped == []
        elif policy == "process":
            assert await handle("d-1") == "ran"
            async with guard.task("d-2") as task:
                assert not task.skip
                assert task.state.origin == "error"
            assert ran == ["d-1"]
            assert skipped == []
        else:
            assert await handle("d-1") is None
            async with guard.task("d-2") as task:
                assert task.skip
                assert not task.closed
            assert [t async for t in guard.open_only(["d-3"])] == []
            assert ran == []
            assert skipped == [TaskState("d-1", False, "error")]  # type: ignore[arg-type]
        with pytest.raises(LookupFailed):
            await guard.check("d-4")


# -- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int) -> None:
    service = CountingService(closed=["r-1"])
    service.fail_next(1, status, retry_after=0.5)
    with service.serve() as running, TaskGuard(_settings(running.url, retry_deadline=3.0)) as g:
        started = time.monotonic()
        assert g.check("r-1").closed
        took = time.monotonic() - started
    assert service.requests == 2
    assert 0.5 <= took <= 0.5 + 1.0, f"{took:.3f} s"  # waited as asked, not the 1 ms backoff


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_async(status: int) -> None:
    service = CountingService(closed=["r-1"])
    service.fail_next(1, status, retry_after=0.5)
    with service.serve() as running:
        async with AsyncTaskGuard(_settings(running.url, retry_deadline=3.0)) as guard:
            started = time.monotonic()
            assert (await guard.check("r-1")).closed
            took = time.monotonic() - started
    assert service.requests == 2
    assert 0.5 <= took <= 0.5 + 1.0, f"{took:.3f} s"


def test_a_retry_after_past_the_deadline_ends_the_lookup_at_once() -> None:
    service = CountingService(closed=["r-1"])
    service.fail_next(1, 503, retry_after=30)
    with service.serve() as running, TaskGuard(_settings(running.url, retry_deadline=1.0)) as g:
        started = time.monotonic()
        with pytest.raises(LookupFailed, match="retry after 30 s"):
            g.check("r-1")
        took = time.monotonic() - started
    assert service.requests == 1
    assert took < 0.5, f"it slept {took:.3f} s although the answer could not come in time"


async def test_a_retry_after_past_the_deadline_ends_the_async_lookup_at_once() -> None:
    service = CountingService(closed=["r-1"])
    service.fail_next(1, 429, retry_after=30)
    with service.serve() as running:
        async with AsyncTaskGuard(_settings(running.url, retry_deadline=1.0)) as guard:
            started = time.monotonic()
            with pytest.raises(LookupFailed):
                await asyncio.wait_for(guard.check("r-1"), 10)
            took = time.monotonic() - started
    assert service.requests == 1
    assert took < 0.5, f"{took:.3f} s"
