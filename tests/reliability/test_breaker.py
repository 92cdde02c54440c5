"""The service breaker: after a run of failed lookups the guard stops asking a
dead connector for a cool-down, decides at once by ``on_error``, then lets
exactly one probe through; a fleet of threads or coroutines sends nothing
while it is open; a flaky-but-alive service never trips it."""

from __future__ import annotations

import time

import pytest

from reliability.fleet import (
    BreakerResult,
    Connector,
    breaker_fleet_async,
    breaker_fleet_sync,
    flaky_never_trips,
)
from taskguard import CircuitOpen, LookupFailed, TaskGuard, TaskGuardSettings


def assert_breaker_held(result: BreakerResult) -> None:
    # It opened after `threshold` failed lookups, each one retried to the end.
    assert result.opening_errors == ["LookupFailed"] * result.threshold
    assert result.attempts_to_open == result.threshold * 3  # retry_attempts=3
    # During the cool-down the fleet asked thousands of times and nothing was sent.
    assert result.fleet_checks > 1000
    assert result.requests_during_cooldown == 0
    # Refusals are immediate (the slowest one only waited for its thread's turn).
    assert result.median_rejection < 0.01, f"median refusal {result.median_rejection:.4f} s"
    assert result.slowest_rejection < 2.0
    # Each face applied its own on_error at once; no face saw an answer.
    assert all("closed=True" not in name for name in result.fleet_outcomes)
    # After the cool-down, with the whole fleet asking at once: one probe.
    assert result.probe_requests == 1
    assert result.probe_rejections == result.probe_total - 1
    # The probe succeeded, so the breaker closed and answers flow again.
    assert result.recovered == 2
    stats = result.stats
    assert stats["breaker_rejections"] == result.fleet_checks + result.probe_rejections
    assert stats["service_calls"] == result.attempts_to_open + 1 + 2


def test_a_thread_fleet_does_not_hammer_a_dead_connector() -> None:
    result = breaker_fleet_sync(threads=16)
    assert_breaker_held(result)
    outcomes = result.fleet_outcomes
    assert set(outcomes) == {
        "CircuitOpen",  # check() and on_error="raise"
        "skipped state(closed=False, origin=error)",  # on_error="skip"
        "handler ran",  # on_error="process"
        "task() skip",
        "open_only yielded",  # open_only(on_error="process")
    }
    assert (
        result.stats["skips"]
        == outcomes["skipped state(closed=False, origin=error)"] + (outcomes["task() skip"])
    )
    assert result.stats["processed"] == outcomes["handler ran"] + outcomes["open_only yielded"]


async def test_a_coroutine_fleet_does_not_hammer_a_dead_connector() -> None:
    result = await breaker_fleet_async(coroutines=200)
    assert_breaker_held(result)
    assert set(result.fleet_outcomes) == {
        "CircuitOpen",
        "skipped state(closed=False, origin=error)",
    }


def test_a_flaky_service_never_trips_it() -> None:
    result = flaky_never_trips(lookups=3000)
    # Runs of failed *attempts* longer than the threshold happened many times...
    assert result.longest_failed_attempt_run > result.threshold
    # ...some lookups failed outright, but never `threshold` in a row...
    assert 0 < result.failed_lookups < result.lookups * 0.02
    assert result.longest_failed_lookup_run < result.threshold
    # ...so the breaker never refused a lookup.
    assert result.breaker_rejections == 0


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    connector = Connector()
    settings = TaskGuardSettings(
        service_breaker_failures=2,
        service_breaker_cooldown=0.3,
        retry_attempts=2,
        retry_backoff=0.001,
        retry_backoff_max=0.002,
    )
    with TaskGuard(settings, transport=connector) as guard:
        for n in range(2):
            with pytest.raises(LookupFailed) as caught:
                guard.check(f"x-{n}")
            assert not isinstance(caught.value, CircuitOpen)
        with pytest.raises(CircuitOpen, match="service_breaker_cooldown"):
            guard.check("x-2")
        time.sleep(0.35)
        with pytest.raises(LookupFailed) as probe:  # the probe, still dead
            guard.check("x-3")
        assert not isinstance(probe.value, CircuitOpen)
        assert connector.calls == 2 * 2 + 2
        with pytest.raises(CircuitOpen):  # open again at once, for a full cool-down
            guard.check("x-4")
        time.sleep(0.35)
        connector.alive = True
        assert guard.check("x-5").closed is False
        assert guard.check("x-6").closed is False  # closed again: no probe limit
        assert connector.calls == 2 * 2 + 2 + 2
        assert guard.stats()["breaker_rejections"] == 2


def test_an_answering_service_resets_the_count() -> None:
    # Failed lookups count only in a row: an answer in between starts again.
    connector = Connector()
    settings = TaskGuardSettings(
        service_breaker_failures=3, service_breaker_cooldown=30.0, retry_attempts=1
    )
    with TaskGuard(settings, transport=connector) as guard:
        for round_ in range(3):
            connector.alive = False
            for n in range(2):
                with pytest.raises(LookupFailed):
                    guard.check(f"r{round_}-{n}")
            connector.alive = True
            assert guard.check(f"ok-{round_}").closed is False
        assert guard.stats()["breaker_rejections"] == 0
