"""Retries (tenacity, one schedule for sync and async) and single-flight."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from taskguard import LookupFailed, ProtocolError, ServiceError, TaskGuardSettings, TransportError
from taskguard.lookup import AsyncSingleFlight, RetryPolicy, SingleFlight


def policy(**overrides: Any) -> tuple[RetryPolicy, list[int]]:
    retries: list[int] = []
    values: dict[str, Any] = {"retry_backoff": 0.001, "retry_backoff_max": 0.002, **overrides}
    return RetryPolicy(TaskGuardSettings(**values), on_retry=lambda: retries.append(1)), retries


class Flaky:
    """An attempt that fails ``failures`` times with ``error``, then answers True."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or TransportError("503", retryable=True, status=503)
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.failures:
            raise self.error
        return True

    async def async_call(self, timeout: float) -> bool:
        return self(timeout)


def run_both(p: RetryPolicy, attempt: Flaky) -> list[Any]:
    """Run the sync and the async driver over fresh copies of the same attempt."""
    outcomes: list[Any] = []
    for driver in ("sync", "async"):
        fresh = Flaky(attempt.failures, attempt.error)
        try:
            if driver == "sync":
                result: Any = p.call(fresh, "W1")
            else:
                result = asyncio.run(p.acall(fresh.async_call, "W1"))
        except Exception as exc:
            result = exc
        outcomes.append((result, len(fresh.timeouts)))
    return outcomes


def test_first_try_success_makes_one_attempt_and_no_retry() -> None:
    p, retries = policy()
    for result, attempts in run_both(p, Flaky(0)):
        assert (result, attempts) == (True, 1)
    assert retries == []


def test_retryable_failures_are_retried_until_success() -> None:
    p, retries = policy(retry_attempts=4)
    for result, attempts in run_both(p, Flaky(3)):
        assert (result, attempts) == (True, 4)
    assert len(retries) == 6  # three retries per driver


def test_attempts_run_out_with_lookup_failed_chaining_the_cause() -> None:
    p, _ = policy(retry_attempts=3)
    for result, attempts in run_both(p, Flaky(10)):
        assert isinstance(result, LookupFailed)
        assert attempts == 3
        assert result.attempts == 3
        assert result.workid == "W1"
        assert isinstance(result.__cause__, TransportError)
        assert "W1" in str(result)


@pytest.mark.parametrize(
    "error",
    [ServiceError("no", workid="W1", status=400), ProtocolError("bad", workid="W1")],
)
def test_service_and_protocol_errors_are_not_retried(error: Exception) -> None:
    p, retries = policy()
    for result, attempts in run_both(p, Flaky(1, error)):
        assert result is error
        assert attempts == 1
    assert retries == []


def test_non_retryable_transport_error_fails_at_once() -> None:
    p, _ = policy()
    error = TransportError("bug in transport", retryable=False)
    for result, attempts in run_both(p, Flaky(5, error)):
        assert isinstance(result, LookupFailed)
        assert result.__cause__ is error
        assert attempts == 1


def test_deadline_bounds_the_whole_lookup_and_cuts_the_last_timeout() -> None:
    p, _ = policy(
        retry_attempts=100,
        retry_backoff=0.05,
        retry_backoff_max=0.05,
        retry_deadline=0.3,
        request_timeout=5.0,
    )
    attempt = Flaky(1000)
    started = time.monotonic()
    with pytest.raises(LookupFailed, match="retry_deadline"):
        p.call(attempt, "W1")
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.1
    assert max(attempt.timeouts) <= 0.3
    assert attempt.timeouts[-1] < 0.3  # each later attempt only gets what is left
    assert len(attempt.timeouts) > 2


def test_retry_after_is_honoured() -> None:
    p, _ = policy(retry_attempts=2)
    attempt = Flaky(1, TransportError("429", retryable=True, status=429, retry_after=0.2))
    started = time.monotonic()
    assert p.call(attempt, "W1") is True
    assert time.monotonic() - started >= 0.2


def test_retry_after_past_the_deadline_gives_up_at_once() -> None:
    p, _ = policy(retry_deadline=1.0)
    attempt = Flaky(1, TransportError("503", retryable=True, status=503, retry_after=30))
    started = time.monotonic()
    with pytest.raises(LookupFailed):
        p.call(attempt, "W1")
    assert time.monotonic() - started < 0.5


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    p, _ = policy(retry_backoff=0.1, retry_backoff_max=0.4)
    for n, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 0.4)]:
        waits = [p.backoff(n, None) for _ in range(200)]
        assert min(waits) >= 0
        assert max(waits) <= ceiling
        assert max(waits) > ceiling / 2  # jittered across the range, not fixed


async def test_cancellation_is_never_retried_or_swallowed() -> None:
    p, retries = policy()
    calls = 0

    async def hang(timeout: float) -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return True

    task = asyncio.ensure_future(p.acall(hang, "W1"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert retries == []


async def test_asyncio_timeout_around_a_lookup_is_not_retried() -> None:
    p, _ = policy()
    calls = 0

    async def hang(timeout: float) -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return True

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(p.acall(hang, "W1"), 0.05)
    assert calls == 1


# -- single-flight ---------------------------------------------------------------


def test_threads_asking_about_one_key_share_one_call() -> None:
    coalesced: list[int] = []
    flights = SingleFlight(on_coalesce=lambda: coalesced.append(1))
    calls = 0
    barrier = threading.Barrier(32)

    def slow() -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        return "answer"

    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(flights.run("W1", slow))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert calls == 1
    assert results == ["answer"] * 32
    assert len(coalesced) == 31


def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    flights = SingleFlight(on_coalesce=lambda: None)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def failing() -> str:
        time.sleep(0.1)
        raise LookupFailed("down", workid="W1")

    def worker() -> None:
        barrier.wait()
        try:
            flights.run("W1", failing)
        except LookupFailed as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(errors) == 8
    assert flights.run("W1", lambda: "fresh") == "fresh"  # nothing cached


async def test_coroutines_asking_about_one_key_share_one_call() -> None:
    flights = AsyncSingleFlight(on_coalesce=lambda: None)
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "answer"

    results = await asyncio.gather(*(flights.run("W1", slow) for _ in range(1000)))
    assert calls == 1
    assert results == ["answer"] * 1000


async def test_a_cancelled_waiter_leaves_the_call_to_the_others() -> None:
    flights = AsyncSingleFlight(on_coalesce=lambda: None)
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return "answer"

    first = asyncio.ensure_future(flights.run("W1", slow))
    second = asyncio.ensure_future(flights.run("W1", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "answer"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert calls == 1


async def test_when_every_waiter_leaves_the_call_is_cancelled_and_not_reused() -> None:
    flights = AsyncSingleFlight(on_coalesce=lambda: None)
    started: list[int] = []
    cancelled: list[int] = []

    async def slow() -> str:
        started.append(1)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
        return "never"

    waiter = asyncio.ensure_future(flights.run("W1", slow))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    async def quick() -> str:
        return "fresh"

    assert await asyncio.wait_for(flights.run("W1", quick), 1) == "fresh"
    await asyncio.sleep(0)
    assert cancelled == [1]
