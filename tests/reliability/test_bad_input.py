"""Bad input gets a clear error and touches nothing (DESIGN section 2).

Every invalid workid class through every public entry point, sync and async,
against a live HTTP service and a live Redis: ``InvalidWorkId`` each time, no
request to the service, no command to Redis, no counter moved. Invalid
settings are refused when built, naming the setting, before anything connects.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from support.redis_server import RedisServer

from reliability.hardening import BAD_VALUES, bad_input_sweep
from taskguard import (
    AsyncTaskGuard,
    ConfigurationError,
    InvalidWorkId,
    TaskGuard,
    TaskGuardSettings,
)
from taskguard.testing import FakeTaskStateService


def test_every_invalid_workid_through_every_entry_point(live_redis: RedisServer) -> None:
    sweep = bad_input_sweep(live_redis)
    assert sweep.failures == []
    assert len(sweep.entry_points) == 22
    assert len(sweep.values) == len(BAD_VALUES)
    assert sweep.tried == sweep.refused == 22 * len(BAD_VALUES)
    assert sweep.requests == 0, "the service was asked"
    assert sweep.redis_commands == {}, "Redis was sent commands"
    assert sweep.stats_moved == {}, "counters moved"


@pytest.mark.parametrize("workid", ["x" * 256, "Ünï ✓ 42", "*", 0, -5, 10**255])
def test_the_edges_of_valid_are_accepted(workid: object) -> None:
    service = FakeTaskStateService(closed=[str(workid)])
    with TaskGuard(TaskGuardSettings(), transport=service) as guard:
        assert guard.check(workid).closed  # type: ignore[arg-type]
    assert service.requests == 1


INVALID_SETTINGS: list[tuple[str, Any]] = [
    ("request_timeout", 0),
    ("request_timeout", -1),
    ("redis_timeout", 0),
    ("redis_breaker_cooldown", 0),
    ("closed_ttl", 0),
    ("closed_ttl", -5),
    ("open_ttl", -1),
    ("local_cache_ttl", 0),
    ("local_cache_size", -1),
    ("retry_attempts", 0),
    ("retry_backoff", -0.1),
    ("retry_deadline", 0),
    ("lookup_concurrency", 0),
    ("service_breaker_failures", -1),
    ("service_breaker_cooldown", 0),
    ("max_response_bytes", 10),
    ("on_error", "ignore"),
    ("service_url", "ftp://example.com/x"),
    ("service_url", "not a url"),
    ("service_url", "http://127.0.0.1:99999/x"),
    ("redis_url", "http://127.0.0.1:6379"),
    ("redis_url", "redis://127.0.0.1:70000/0"),
    ("key_prefix", ""),
    ("key_prefix", "has space"),
    ("key_prefix", "tab\there"),
    ("source", ""),
    ("channel", ""),
    ("no_such_setting", 1),
]


@pytest.mark.parametrize(("name", "value"), INVALID_SETTINGS)
def test_an_invalid_setting_is_refused_naming_it(name: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        TaskGuardSettings(**{name: value})
    assert name in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("name", "value"), INVALID_SETTINGS[:-1])
def test_an_invalid_environment_variable_is_refused_naming_it(
    name: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"TASKGUARD_{name.upper()}", str(value))
    with pytest.raises(ValidationError, match=name):
        TaskGuard.from_env()


def test_backoffs_out_of_order_are_refused() -> None:
    with pytest.raises(ValidationError, match="retry_backoff_max"):
        TaskGuardSettings(retry_backoff=1.0, retry_backoff_max=0.5)


def test_a_bad_setting_touches_nothing(live_redis: RedisServer) -> None:
    service = FakeTaskStateService()
    with service.serve() as running:
        live = {"service_url": running.url, "redis_url": live_redis.url}
        for name, value in INVALID_SETTINGS:
            with pytest.raises(ValidationError):
                TaskGuard(TaskGuardSettings(**{**live, name: value}))
        with pytest.raises(ConfigurationError, match="service_url"):
            TaskGuard(TaskGuardSettings(redis_url=live_redis.url))
        with pytest.raises(ConfigurationError, match="service_url"):
            AsyncTaskGuard(TaskGuardSettings(redis_url=live_redis.url))
    assert service.requests == 0
    assert set(live_redis.info_commandstats()) <= {"info", "config|resetstat", "flushall"}


def test_bad_options_fail_when_decorating_not_per_call(live_redis: RedisServer) -> None:
    service = FakeTaskStateService()
    with (
        service.serve() as running,
        TaskGuard(TaskGuardSettings(service_url=running.url, redis_url=live_redis.url)) as guard,
    ):
        with pytest.raises(ValueError, match="on_error"):
            guard.skip_if_closed(on_error="maybe")
        with pytest.raises(TypeError, match="no argument named"):

            @guard.skip_if_closed(workid="task_id")
            def handle(workid: str) -> None: ...

        with pytest.raises(TypeError, match="async def"):

            @AsyncTaskGuard(TaskGuardSettings(service_url=running.url)).skip_if_closed
            def blocking(workid: str) -> None: ...

        with pytest.raises(ValueError, match="batch_size"):
            list(guard.open_only(["w-1"], batch_size=0))
        with pytest.raises(TypeError, match="not one str"):
            guard.check_many("w-1")

        @guard.skip_if_closed
        def no_arguments() -> None: ...

        with pytest.raises(InvalidWorkId, match="cannot find the workid"):
            no_arguments()
    assert service.requests == 0
    assert set(live_redis.info_commandstats()) <= {"info", "config|resetstat", "flushall"}
