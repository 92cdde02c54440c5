"""Concurrency: 16 threads and 2,000 asyncio tasks over 500 overlapping workids.

No deadlock (every join and gather is bounded), exactly one service call per
workid (all closed, so the first answer is cached), and the counters of
``stats()`` add up whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest

from reliability.contention import (
    ConcurrencyResult,
    concurrency_async,
    concurrency_sync,
    stats_invariants,
)
from taskguard import AsyncTaskGuard, TaskGuard, TaskGuardSettings, TaskState
from taskguard.testing import FakeTaskStateService


def assert_one_call_per_workid(result: ConcurrencyResult) -> None:
    assert result.failures == []
    assert result.requests_per_workid == (1, 1), "a closed workid was looked up twice"
    assert result.requests == result.workids == 500
    assert result.stats["lookups"] == 500
    assert result.stats["errors"] == 0
    assert result.stats["skips"] == result.face_calls  # every task is closed
    broken = [name for name, holds in result.invariants.items() if not holds]
    assert broken == [], f"{broken}: {result.stats}"
    assert result.stats["coalesced"] > 0, "no two checks ever overlapped: the test proves little"


def _redis_url(request: pytest.FixtureRequest, tier: str) -> str | None:
    return str(request.getfixturevalue("redis_url")) if tier == "redis" else None


@pytest.mark.parametrize("tier", ["memory", "redis"])
def test_sixteen_threads(tier: str, request: pytest.FixtureRequest) -> None:
    result = concurrency_sync(
        threads=16, workids=500, latency=0.005, redis_url=_redis_url(request, tier)
    )
    assert result.calls == 16 * 500
    assert_one_call_per_workid(result)


@pytest.mark.parametrize("tier", ["memory", "redis"])
async def test_two_thousand_asyncio_tasks(tier: str, request: pytest.FixtureRequest) -> None:
    result = await concurrency_async(
        tasks=2000, workids=500, latency=0.005, redis_url=_redis_url(request, tier)
    )
    assert result.calls == 2000
    assert_one_call_per_workid(result)


# -- the race that cost a second service call ----------------------------------------------------


class StaleFirstGet:
    """A Redis client whose first GET reads a miss, then waits (the check is
    descheduled) until another check has finished the lookup and cached it."""

    def __init__(self, inner: Any, resume: threading.Event) -> None:
        self._inner = inner
        self._resume = resume
        self.stalled = threading.Event()
        self._first = True

    def get(self, name: str) -> Any:
        value = self._inner.get(name)
        if self._first:
            self._first = False
            self.stalled.set()
            assert self._resume.wait(10)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_lookup_finished_while_a_check_was_on_its_way_is_not_repeated() -> None:
    service = FakeTaskStateService(closed=["w"])
    resume = threading.Event()
    client = StaleFirstGet(fakeredis.FakeRedis(), resume)
    with TaskGuard(TaskGuardSettings(), transport=service, redis=client) as guard:
        late: list[TaskState] = []
        thread = threading.Thread(target=lambda: late.append(guard.check("w")))
        thread.start()
        assert client.stalled.wait(10)  # it read "not in Redis" and was descheduled
        assert guard.check("w") == TaskState("w", True, "service")  # type: ignore[arg-type]
        resume.set()
        thread.join(10)
        assert not thread.is_alive()
        assert late[0].closed
        assert service.requests == 1, "the late check asked the service again"
        stats = guard.stats()
    assert all(stats_invariants(stats, checks_made=2, face_calls=0, requests=1).values())


async def test_the_same_race_in_asyncio() -> None:
    service = FakeTaskStateService(closed=["w"])
    inner = fakeredis.aioredis.FakeRedis()
    resume = asyncio.Event()
    stalled = asyncio.Event()

    class StaleFirstAsyncGet:
        first = True

        async def get(self, name: str) -> Any:
            value = await inner.get(name)
            if StaleFirstAsyncGet.first:
                StaleFirstAsyncGet.first = False
                stalled.set()
                await asyncio.wait_for(resume.wait(), 10)
            return value

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    async with AsyncTaskGuard(
        TaskGuardSettings(), transport=service, redis=StaleFirstAsyncGet()
    ) as guard:
        late = asyncio.create_task(guard.check("w"))
        await asyncio.wait_for(stalled.wait(), 10)
        assert (await guard.check("w")).origin == "service"
        resume.set()
        assert (await asyncio.wait_for(late, 10)).closed
    assert service.requests == 1, "the late check asked the service again"
