"""AsyncTaskGuard: the same answers as TaskGuard, from asyncio code."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from taskguard import (
    AsyncTaskGuard,
    ConfigurationError,
    InvalidWorkId,
    LookupFailed,
    ServiceError,
    TaskGuardSettings,
    TaskState,
)
from taskguard.testing import FakeTaskStateService

FAST = {"retry_backoff": 0.001, "retry_backoff_max": 0.002}


@pytest.fixture
def service() -> FakeTaskStateService:
    return FakeTaskStateService(closed=["C1", "C2", "C3"])


def make_guard(service: Any, redis: Any = None, **overrides: Any) -> AsyncTaskGuard:
    settings = TaskGuardSettings(**{**FAST, **overrides})
    return AsyncTaskGuard(settings, transport=service, redis=redis)


@pytest.fixture
async def guard(service: FakeTaskStateService) -> AsyncIterator[AsyncTaskGuard]:
    async with make_guard(service) as g:
        yield g


async def test_check_tiers_and_is_closed(
    guard: AsyncTaskGuard, service: FakeTaskStateService
) -> None:
    assert await guard.check("C1") == TaskState("C1", True, "service")  # type: ignore[arg-type]
    assert await guard.check("C1") == TaskState("C1", True, "local")  # type: ignore[arg-type]
    assert await guard.is_closed("O1") is False
    assert service.requests == 2


async def test_invalid_workid_touches_nothing(
    guard: AsyncTaskGuard, service: FakeTaskStateService
) -> None:
    with pytest.raises(InvalidWorkId):
        await guard.check("")
    with pytest.raises(InvalidWorkId):
        await guard.check_many(["C1", None])  # type: ignore[list-item]
    assert service.requests == 0


async def test_check_many_and_first_failure_in_input_order(
    guard: AsyncTaskGuard, service: FakeTaskStateService
) -> None:
    result = await guard.check_many(["C1", "O1", 7, "C1"])
    assert list(result) == ["C1", "O1", "7"]
    service.error_next(1)
    with pytest.raises(ServiceError) as info:
        await guard.check_many(["O5", "C2"])
    assert info.value.workid == "O5"  # the first lookup to reach the service is O5's
    assert (await guard.check("C2")).origin == "local"  # its batch mate was cached


async def test_concurrent_checks_coalesce_into_one_call_per_workid(
    service: FakeTaskStateService,
) -> None:
    service.latency = 0.05
    async with make_guard(service) as guard:
        workids = [f"C{i % 100}" for i in range(1000)]
        for wid in set(workids):
            service.close(wid)
        states = await asyncio.gather(*(guard.check(w) for w in workids))
        assert all(s.closed for s in states)
        assert service.requests == 100
        assert guard.stats()["coalesced"] == 900


async def test_retries_and_lookup_failed(service: FakeTaskStateService) -> None:
    async with make_guard(service, retry_attempts=3) as guard:
        service.fail_next(2)
        assert (await guard.check("C1")).closed
        service.fail_next(3)
        with pytest.raises(LookupFailed):
            await guard.check("C2")
        assert service.requests == 6


async def test_mark_closed_and_forget(guard: AsyncTaskGuard) -> None:
    await guard.mark_closed("O1")
    assert (await guard.check("O1")).origin == "local"
    await guard.forget("O1")
    assert await guard.check("O1") == TaskState("O1", False, "service")  # type: ignore[arg-type]


async def test_cancelling_a_check_leaves_no_waiter_stuck(service: FakeTaskStateService) -> None:
    service.latency = 0.2
    async with make_guard(service) as guard:
        first = asyncio.ensure_future(guard.check("C1"))
        second = asyncio.ensure_future(guard.check("C1"))
        await asyncio.sleep(0.02)
        first.cancel()
        assert (await asyncio.wait_for(second, 2)).closed
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_async_redis_tier(service: FakeTaskStateService) -> None:
    server = fakeredis.FakeServer()
    one = make_guard(service, redis=fakeredis.aioredis.FakeRedis(server=server))
    two = make_guard(service, redis=fakeredis.aioredis.FakeRedis(server=server))
    assert (await one.check("C1")).origin == "service"
    assert (await two.check("C1")).origin == "redis"
    many = await two.check_many(["C1", "C2"])
    assert [s.origin for s in many.values()] == ["local", "service"]
    assert (await one.check_many(["C2"]))["C2"].origin == "redis"
    await one.aclose()
    await two.aclose()


def test_a_blocking_redis_client_is_refused(service: FakeTaskStateService) -> None:
    with pytest.raises(ConfigurationError, match="asyncio Redis"):
        make_guard(service, redis=fakeredis.FakeRedis())


def test_built_outside_a_loop_and_used_from_several_loops(service: FakeTaskStateService) -> None:
    guard = make_guard(service)  # at import time, say: no loop is running
    assert asyncio.run(guard.check("C1")).origin == "service"
    assert asyncio.run(guard.check("C1")).origin == "local"
    assert asyncio.run(guard.check("O1")).closed is False
    asyncio.run(guard.aclose())


# -- the faces ------------------------------------------------------------------------


async def test_decorator_on_async_handlers(guard: AsyncTaskGuard) -> None:
    ran: list[str] = []

    @guard.skip_if_closed(mark_closed_on_success=True, on_skip=lambda s: f"skipped {s.workid}")
    async def handle(task: dict[str, str]) -> str:
        """Docs."""
        ran.append(task["workid"])
        return "ran"

    assert inspect.iscoroutinefunction(handle)
    assert handle.__doc__ == "Docs."
    assert await handle({"workid": "O1"}) == "ran"
    assert await handle({"workid": "O1"}) == "skipped O1"  # marked closed on success
    assert await handle({"workid": "C1"}) == "skipped C1"
    assert ran == ["O1"]


def test_decorator_refuses_a_blocking_handler(guard: AsyncTaskGuard) -> None:
    with pytest.raises(TypeError, match="TaskGuard"):

        @guard.skip_if_closed
        def handle(workid: str) -> None: ...


async def test_decorator_accepts_partials_and_async_callables(guard: AsyncTaskGuard) -> None:
    class Handler:
        async def __call__(self, workid: str) -> str:
            return "object ran"

    async def handle(prefix: str, workid: str) -> str:
        return prefix

    by_object = guard.skip_if_closed(Handler())
    by_partial = guard.skip_if_closed(workid=lambda *a, **k: k["workid"])(
        functools.partial(handle, "partial ran")
    )
    assert await by_object("O1") == "object ran"
    assert await by_object("C1") is None
    assert await by_partial(workid="O1") == "partial ran"


async def test_on_error_policies(guard: AsyncTaskGuard, service: FakeTaskStateService) -> None:
    @guard.skip_if_closed(on_error="skip")
    async def skipper(workid: str) -> str:
        return "ran"

    @guard.skip_if_closed(on_error="process")
    async def processor(workid: str) -> str:
        return "ran"

    @guard.skip_if_closed
    async def raiser(workid: str) -> str:
        return "ran"

    service.error_next(3)
    assert await skipper("O1") is None
    assert await processor("O1") == "ran"
    with pytest.raises(ServiceError):
        await raiser("O1")


async def test_task_context_manager(guard: AsyncTaskGuard, service: FakeTaskStateService) -> None:
    async with guard.task("C1") as t:
        assert (t.closed, t.skip) == (True, True)
    async with guard.task("O1", mark_closed_on_success=True) as t:
        assert not t.skip
    async with guard.task("O1") as t:
        assert t.closed
        assert t.state.origin == "local"
    service.fail_next(10)
    async with guard.task("O2", on_error="skip") as t:
        assert (t.skip, t.state.origin) == (True, "error")


async def test_open_only_over_async_and_sync_sources(guard: AsyncTaskGuard) -> None:
    async def source() -> AsyncIterator[dict[str, str]]:
        for wid in ["O1", "C1", "O2", "C2", "O3"]:
            yield {"workid": wid}

    skipped: list[str] = []
    got = [
        t["workid"]
        async for t in guard.open_only(
            source(), batch_size=2, on_skip=lambda t, s: skipped.append(t["workid"])
        )
    ]
    assert got == ["O1", "O2", "O3"]
    assert skipped == ["C1", "C2"]
    assert [t async for t in guard.open_only(["C3", "O4"])] == ["O4"]


async def test_open_only_is_lazy(guard: AsyncTaskGuard, service: FakeTaskStateService) -> None:
    async def endless() -> AsyncIterator[str]:
        i = 0
        while True:
            yield f"O{i}"
            i += 1

    got: list[str] = []
    async for task in guard.open_only(endless(), batch_size=5):
        got.append(task)
        if len(got) == 7:
            break
    assert got == [f"O{i}" for i in range(7)]
    assert service.requests == 10
