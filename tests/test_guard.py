"""TaskGuard's questions and cache writes, over the in-process reference service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from taskguard import (
    CircuitOpen,
    ConfigurationError,
    InvalidWorkId,
    LookupFailed,
    ProtocolError,
    ServiceError,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
)
from taskguard.testing import FakeTaskStateService

FAST = {"retry_backoff": 0.001, "retry_backoff_max": 0.002}


@pytest.fixture
def service() -> FakeTaskStateService:
    return FakeTaskStateService(closed=["C1", "C2", 42])


def make_guard(service: Any, redis: Any = None, **overrides: Any) -> TaskGuard:
    return TaskGuard(TaskGuardSettings(**{**FAST, **overrides}), transport=service, redis=redis)


@pytest.fixture
def guard(service: FakeTaskStateService) -> Iterator[TaskGuard]:
    with make_guard(service) as g:
        yield g


def test_closed_task_is_answered_by_the_service_then_the_local_tier(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    assert guard.check("C1") == TaskState("C1", True, "service")  # type: ignore[arg-type]
    assert guard.check("C1") == TaskState("C1", True, "local")  # type: ignore[arg-type]
    assert service.requests == 1
    assert guard.is_closed("C1") is True


def test_open_answers_are_not_cached_by_default(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    assert guard.check("O1").closed is False
    assert guard.check("O1").origin == "service"
    assert service.requests == 2  # the customer may close it at any moment


def test_open_answers_are_reused_for_open_ttl(service: FakeTaskStateService) -> None:
    with make_guard(service, open_ttl=0.2) as guard:
        assert guard.check("O1").origin == "service"
        assert guard.check("O1").origin == "local"
        time.sleep(0.25)
        service.close("O1")
        assert guard.check("O1") == TaskState("O1", True, "service")  # type: ignore[arg-type]


def test_int_workids_are_sent_and_keyed_as_strings(guard: TaskGuard) -> None:
    assert guard.check(42) == TaskState("42", True, "service")  # type: ignore[arg-type]
    assert guard.check("42").origin == "local"


@pytest.mark.parametrize("bad", [None, "", "  ", "x" * 257, "a\x00b", True, 1.5, b"1"])
def test_invalid_workids_touch_nothing(
    guard: TaskGuard, service: FakeTaskStateService, bad: object
) -> None:
    for call in (guard.check, guard.is_closed, guard.mark_closed, guard.forget):
        with pytest.raises(InvalidWorkId):
            call(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkId):
        guard.check_many(["C1", bad])  # type: ignore[list-item]
    assert service.requests == 0
    assert guard.stats()["checks"] == 0


def test_check_many_answers_every_workid_once(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    result = guard.check_many(["C1", "O1", 42, "C1", "O2"])
    assert list(result) == ["C1", "O1", "42", "O2"]
    assert [s.closed for s in result.values()] == [True, False, True, False]
    assert service.requests == 4
    again = guard.check_many(["C1", "42"])
    assert {s.origin for s in again.values()} == {"local"}
    assert service.requests == 4


def test_check_many_of_a_str_is_a_clear_error(guard: TaskGuard) -> None:
    with pytest.raises(TypeError, match="not one str"):
        guard.check_many("C1")


def test_check_many_caches_what_arrived_then_raises_the_first_failure(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    service.error_next(1, message="backend down")
    with pytest.raises(ServiceError, match="backend down") as info:
        guard.check_many(["C1", "C2"])
    failed = info.value.workid
    assert failed in ("C1", "C2")
    other = "C2" if failed == "C1" else "C1"
    assert guard.check(other).origin == "local"  # the good answer was kept
    assert guard.check(failed) == TaskState(failed, True, "service")  # type: ignore[arg-type]


def test_a_failed_lookup_is_never_cached(guard: TaskGuard, service: FakeTaskStateService) -> None:
    service.wrong_workid_next(1)
    with pytest.raises(ProtocolError):
        guard.check("C1")
    assert guard.check("C1").origin == "service"


def test_success_false_is_a_service_error_and_not_retried(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    service.error_next(1, message="not registered")
    with pytest.raises(ServiceError) as info:
        guard.check("C1")
    assert info.value.error_message == "not registered"
    assert service.requests == 1


def test_unavailable_service_is_retried_then_lookup_failed(service: FakeTaskStateService) -> None:
    with make_guard(service, retry_attempts=3) as guard:
        service.fail_next(10, status=503)
        with pytest.raises(LookupFailed) as info:
            guard.check("C1")
        assert info.value.workid == "C1"
        assert info.value.attempts == 3
        assert service.requests == 3
        stats = guard.stats()
        assert (stats["retries"], stats["service_calls"], stats["errors"]) == (2, 3, 1)


def test_transient_failures_are_retried_transparently(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    service.fail_next(2, status=503)
    assert guard.check("C1").closed is True
    assert service.requests == 3


def test_mark_closed_and_forget(guard: TaskGuard, service: FakeTaskStateService) -> None:
    guard.mark_closed("O1")
    assert guard.check("O1") == TaskState("O1", True, "local")  # type: ignore[arg-type]
    guard.forget("O1")
    assert guard.check("O1") == TaskState("O1", False, "service")  # type: ignore[arg-type]
    assert service.requests == 1


def test_stats_add_up(guard: TaskGuard) -> None:
    guard.check("C1")
    guard.check("C1")
    guard.check("O1")
    guard.check_many(["C1", "C2"])
    stats = guard.stats()
    assert stats["checks"] == 5
    assert stats["local_hits"] == 2
    assert stats["service_calls"] == stats["lookups"] == 3
    assert stats["errors"] == stats["retries"] == 0


def test_concurrent_threads_make_one_service_call_per_workid(service: FakeTaskStateService) -> None:
    service.latency = 0.1
    with make_guard(service) as guard:
        barrier = threading.Barrier(32)
        states: list[TaskState] = []

        def worker() -> None:
            barrier.wait()
            states.append(guard.check("C1"))

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert service.requests == 1
        assert len(states) == 32
        assert all(s.closed for s in states)
        assert guard.stats()["coalesced"] == 31


def test_service_breaker_stops_asking_a_dead_service_then_probes(
    service: FakeTaskStateService,
) -> None:
    with make_guard(
        service, retry_attempts=1, service_breaker_failures=3, service_breaker_cooldown=0.2
    ) as guard:
        service.fail_next(1000, status=503)
        for wid in ("A", "B", "C"):
            with pytest.raises(LookupFailed):
                guard.check(wid)
        sent = service.requests
        with pytest.raises(CircuitOpen):
            guard.check("D")
        assert service.requests == sent  # refused without a request
        assert guard.stats()["breaker_rejections"] == 1
        service.clear_faults()
        time.sleep(0.25)
        assert guard.check("C1").closed is True  # the probe closes the breaker
        assert guard.check("O9").closed is False


def test_a_guard_needs_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKGUARD_SERVICE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="service_url"):
        TaskGuard(TaskGuardSettings())


def test_from_env_and_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKGUARD_SERVICE_URL", "http://127.0.0.1:9/checktaskstate")
    monkeypatch.setenv("TASKGUARD_AUTH_TOKEN", "tok-secret")
    with TaskGuard.from_env() as guard:
        assert guard.settings.service_url == "http://127.0.0.1:9/checktaskstate"
        assert "tok-secret" not in repr(guard)
    with TaskGuard.from_settings(TaskGuardSettings(closed_ttl=5), transport=lambda r: {}) as g:
        assert g.settings.closed_ttl == 5


def test_a_plain_function_is_a_transport() -> None:
    seen: list[dict[str, Any]] = []

    def connector(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        wid = request["data"]["workid"]
        return {
            "subtopic": "CheckTaskState",
            "data": {"isClosed": wid == "7", "workid": wid, "Success": True},
        }

    with TaskGuard(TaskGuardSettings(source="myapp"), transport=connector) as guard:
        assert guard.is_closed(7) is True
        assert guard.is_closed("8") is False
    assert seen[0]["source"] == "myapp"
    assert seen[0]["data"] == {"workid": "7"}


def test_an_async_transport_is_refused_by_the_blocking_guard() -> None:
    async def connector(request: dict[str, Any]) -> dict[str, Any]:
        return {}

    with pytest.raises(ConfigurationError, match="AsyncTaskGuard"):
        TaskGuard(TaskGuardSettings(), transport=connector)


# -- with a Redis tier (fakeredis here; the real server is in tests/integration) --


def test_redis_tier_is_shared_between_guards(service: FakeTaskStateService) -> None:
    server = fakeredis.FakeServer()
    one = make_guard(service, redis=fakeredis.FakeRedis(server=server))
    two = make_guard(service, redis=fakeredis.FakeRedis(server=server))
    assert one.check("C1").origin == "service"
    assert two.check("C1") == TaskState("C1", True, "redis")  # type: ignore[arg-type]
    assert two.check("C1").origin == "local"
    assert service.requests == 1
    client = fakeredis.FakeRedis(server=server)
    assert client.get("taskguard:task:C1") == b"closed"
    assert 604_700_000 < client.pttl("taskguard:task:C1") <= 604_800_000
    one.close()
    two.close()


def test_open_answers_reach_redis_only_with_open_ttl(service: FakeTaskStateService) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    with make_guard(service, redis=fakeredis.FakeRedis(server=server)) as guard:
        guard.check("O1")
    assert client.get("taskguard:task:O1") is None
    with make_guard(service, redis=fakeredis.FakeRedis(server=server), open_ttl=30) as guard:
        guard.check("O2")
    assert client.get("taskguard:task:O2") == b"open"
    assert 0 < client.pttl("taskguard:task:O2") <= 30_000


def test_check_many_reads_and_writes_redis_in_batches(service: FakeTaskStateService) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    client.set("taskguard:task:R1", b"closed")
    with make_guard(service, redis=fakeredis.FakeRedis(server=server), local_cache_size=0) as guard:
        result = guard.check_many(["R1", "C1", "O1"])
        assert [(s.closed, s.origin) for s in result.values()] == [
            (True, "redis"),
            (True, "service"),
            (False, "service"),
        ]
    assert client.get("taskguard:task:C1") == b"closed"


def test_mark_closed_and_forget_reach_redis(service: FakeTaskStateService) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    with make_guard(service, redis=fakeredis.FakeRedis(server=server), key_prefix="tg") as guard:
        guard.mark_closed("*")
        assert client.get("tg:task:*") == b"closed"
        client.set("tg:task:other", b"closed")
        guard.forget("*")
        assert client.get("tg:task:*") is None
        assert client.get("tg:task:other") == b"closed"  # a literal key, never a pattern


def test_open_only_over_a_redis_tier_hands_on_skip_real_states(
    service: FakeTaskStateService,
) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    client.set("taskguard:task:R1", b"closed")
    client.set("taskguard:task:R2", b"open")
    tasks = [{"workid": "R1"}, {"workid": "R2"}, {"workid": "C1"}, {"workid": "O1"}]
    with make_guard(service, redis=fakeredis.FakeRedis(server=server), open_ttl=60) as guard:
        skipped: list[TaskState] = []
        out = list(guard.open_only(tasks, batch_size=4, on_skip=lambda t, s: skipped.append(s)))
        assert out == [{"workid": "R2"}, {"workid": "O1"}]
        assert skipped == [TaskState("R1", True, "redis"), TaskState("C1", True, "service")]  # type: ignore[list-item]
    # Redis knows the whole batch (no in-process tier): answers stay bare until needed.
    with make_guard(service, redis=fakeredis.FakeRedis(server=server), local_cache_size=0) as g:
        assert [t["workid"] for t in g.open_only(tasks[:2] * 2, batch_size=4)] == ["R2", "R2"]
        seen: list[TaskState] = []
        assert list(g.open_only(tasks[:2], batch_size=2, on_skip=lambda t, s: seen.append(s))) == [
            {"workid": "R2"}
        ]
        assert seen == [TaskState("R1", True, "redis")]  # type: ignore[list-item]
        assert (g.stats()["skips"], g.stats()["redis_hits"]) == (3, 4)


def test_refusals_of_an_open_breaker_do_not_flood_the_log(
    service: FakeTaskStateService, caplog: pytest.LogCaptureFixture
) -> None:
    with make_guard(
        service, retry_attempts=1, service_breaker_failures=1, service_breaker_cooldown=60
    ) as guard:
        service.fail_next(1)

        @guard.skip_if_closed(on_error="process")
        def handle(workid: str) -> str:
            return "ran"

        with caplog.at_level("WARNING", logger="taskguard"):
            assert [handle(f"W{i}") for i in range(50)] == ["ran"] * 50
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 2  # the failed lookup, and the breaker opening
        assert guard.stats()["breaker_rejections"] == 49
