"""Both guards against real parts: a redis-server of our own and the HTTP reference service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.redis_server import RedisServer

import taskguard
from taskguard import (
    AsyncTaskGuard,
    ServiceError,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
)
from taskguard.testing import FakeTaskStateService

TOKEN = "tok-integration-secret"


@pytest.fixture
def service() -> FakeTaskStateService:
    return FakeTaskStateService(closed=["C1", "C2", "C3"], require_token=TOKEN)


@pytest.fixture
def service_url(service: FakeTaskStateService) -> Iterator[str]:
    with service.serve() as running:
        yield running.url


def settings(service_url: str, redis_url: str | None, **overrides: Any) -> TaskGuardSettings:
    values: dict[str, Any] = {
        "service_url": service_url,
        "redis_url": redis_url,
        "auth_token": TOKEN,
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.02,
        "redis_timeout": 0.3,
        "redis_breaker_cooldown": 0.3,
        **overrides,
    }
    return TaskGuardSettings(**values)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_tiers_over_http_and_a_real_redis(
    service_url: str, redis_url: str, raw: redis.Redis, service: FakeTaskStateService
) -> None:
    with (
        TaskGuard(settings(service_url, redis_url)) as one,
        TaskGuard(settings(service_url, redis_url)) as two,
    ):
        assert one.check("C1") == TaskState("C1", True, "service")  # type: ignore[arg-type]
        assert two.check("C1") == TaskState("C1", True, "redis")  # type: ignore[arg-type]
        assert two.check("C1").origin == "local"
        assert one.check("O1").closed is False
    assert service.requests == 2
    assert raw.get("taskguard:task:C1") == b"closed"
    assert 604_000 < raw.ttl("taskguard:task:C1") <= 604_800
    assert raw.exists("taskguard:task:O1") == 0  # open answers are not shared by default
    assert sorted(raw.keys("*")) == [b"taskguard:task:C1"]  # nothing else is written


def test_check_many_is_one_mget_and_one_pipelined_write(
    service_url: str, redis_url: str, redis_server: RedisServer, raw: redis.Redis
) -> None:
    raw.set("taskguard:task:R1", "closed")
    workids = ["R1", *(f"C{i}" for i in range(1, 4)), *(f"O{i}" for i in range(50))]
    with TaskGuard(settings(service_url, redis_url, local_cache_size=0)) as guard:
        guard.check("warm-up")  # connects, so the counts below are the batch's own
        before = redis_server.info_commandstats()
        result = guard.check_many(workids)
        after = redis_server.info_commandstats()
    assert result["R1"].origin == "redis"
    assert [result[f"C{i}"].origin for i in range(1, 4)] == ["service"] * 3
    assert after.get("mget", 0) - before.get("mget", 0) == 1
    assert after.get("get", 0) == before.get("get", 0)
    assert after.get("set", 0) - before.get("set", 0) == 3  # the three closes, in one pipeline


def test_redis_killed_and_restarted_mid_run(
    service_url: str, redis_url: str, redis_server: RedisServer, raw: redis.Redis
) -> None:
    s = settings(service_url, redis_url, local_cache_size=0)
    with TaskGuard(s) as guard:
        assert guard.check("C1").origin == "service"
        redis_server.stop()
        slowest = 0.0
        for wid in ["C1", "C2", "O1", "C1"]:
            started = time.monotonic()
            state = guard.check(wid)
            slowest = max(slowest, time.monotonic() - started)
            assert state.origin == "service"  # Redis is away: the service answers
        assert slowest < s.redis_timeout + 0.5
        assert guard.stats()["redis_errors"] >= 1
        redis_server.start()
        time.sleep(s.redis_breaker_cooldown + 0.1)
        guard.check("C3")  # the probe goes through; the write resumes by itself
        assert raw.get("taskguard:task:C3") == b"closed"
        assert guard.check("C3").origin == "redis"


def test_a_frozen_redis_cannot_stall_a_check(
    service_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    s = settings(service_url, redis_url, local_cache_size=0)
    with TaskGuard(s) as guard:
        guard.check("C1")
        redis_server.freeze()
        try:
            started = time.monotonic()
            assert guard.check("C1").closed is True
            first = time.monotonic() - started
            started = time.monotonic()
            assert guard.check("C2").closed is True
            second = time.monotonic() - started
        finally:
            redis_server.thaw()
    assert first < s.redis_timeout * 2 + 0.5  # one GET timeout (+ its SET is skipped)
    assert second < 0.25  # the breaker is open: Redis is not asked again


def test_wrong_token_is_a_service_error_naming_the_setting(service_url: str) -> None:
    s = settings(service_url, None, auth_token="wrong")
    with TaskGuard(s) as guard, pytest.raises(ServiceError, match="auth_token") as info:
        guard.check("C1")
    assert "wrong" not in str(info.value)
    assert info.value.status == 401


def test_module_level_decorator_with_configure(service_url: str, redis_url: str) -> None:
    guard = TaskGuard(settings(service_url, redis_url))
    taskguard.configure(guard)
    try:

        @taskguard.skip_if_closed(on_skip=lambda state: state.origin)
        def handle(task: dict[str, str]) -> str:
            return "ran"

        assert handle({"workid": "O1"}) == "ran"
        assert handle({"workid": "C1"}) == "service"
        assert handle({"workid": "C1"}) == "local"
    finally:
        taskguard.configure(None)
        guard.close()


async def test_async_guard_over_http_and_a_real_redis(
    service_url: str, redis_url: str, raw: redis.Redis, service: FakeTaskStateService
) -> None:
    async with (
        AsyncTaskGuard(settings(service_url, redis_url)) as one,
        AsyncTaskGuard(settings(service_url, redis_url)) as two,
    ):
        states = await asyncio.gather(*(one.check(f"C{i % 3 + 1}") for i in range(300)))
        assert {s.workid for s in states if s.closed} == {"C1", "C2", "C3"}
        assert service.requests == 3  # coalesced
        many = await two.check_many(["C1", "C2", "O7"])
        assert [s.origin for s in many.values()] == ["redis", "redis", "service"]
    assert raw.get("taskguard:task:C2") == b"closed"


async def test_async_guard_survives_redis_going_away(
    service_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    s = settings(service_url, redis_url, local_cache_size=0)
    async with AsyncTaskGuard(s) as guard:
        assert (await guard.check("C1")).origin == "service"
        redis_server.stop()
        started = time.monotonic()
        states = await asyncio.gather(*(guard.check(f"C{i % 3 + 1}") for i in range(200)))
        assert all(st.closed and st.origin == "service" for st in states)
        assert time.monotonic() - started < s.redis_timeout + 2
        redis_server.start()
        await asyncio.sleep(s.redis_breaker_cooldown + 0.1)
        await guard.check("C2")
        assert (await guard.check("C2")).origin == "redis"


async def test_module_level_decorator_on_async_handlers(service_url: str) -> None:
    guard = AsyncTaskGuard(settings(service_url, None))
    taskguard.configure(guard)
    try:

        @taskguard.skip_if_closed
        async def handle(workid: str) -> str:
            return "ran"

        assert await handle("O1") == "ran"
        assert await handle("C1") is None
    finally:
        taskguard.configure(None)
        await guard.aclose()
