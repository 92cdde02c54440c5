"""The Redis tier against a real ``redis-server``: round trips, and what a worker
sees when Redis dies, comes back, or freezes (accepts connections, never answers)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.connection
from support.redis_server import RedisServer

from taskguard.breaker import Breaker, Stats
from taskguard.cache.redis import (
    AsyncRedisCache,
    RedisCache,
    async_client_from_url,
    client_from_url,
)

TIMEOUT = 0.5  # the default redis_timeout
COOLDOWN = 0.3


def _options(stats: Stats) -> dict[str, Any]:
    return {
        "key_prefix": "tg",
        "closed_ttl": 3600.0,
        "open_ttl": 60.0,
        "breaker": Breaker(threshold=1, cooldown=COOLDOWN),
        "stats": stats,
        "owns_client": True,
    }


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def cache(redis_url: str, stats: Stats) -> Iterator[RedisCache]:
    cache = RedisCache(client_from_url(redis_url, timeout=TIMEOUT), **_options(stats))
    yield cache
    cache.close()


@pytest.fixture
async def acache(redis_url: str, stats: Stats) -> AsyncIterator[AsyncRedisCache]:
    client = async_client_from_url(redis_url, timeout=TIMEOUT, max_connections=4)
    cache = AsyncRedisCache(client, **_options(stats))
    yield cache
    await cache.aclose()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the writes redis-py makes to its sockets: one per round trip."""
    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def _timed(call: Any, *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = call(*args)
    return result, time.monotonic() - start


def test_layout_on_a_real_server(cache: RedisCache, redis_server: RedisServer) -> None:
    cache.put("w 1*", True)
    cache.put("w2", False)

    assert redis_server.command("GET", "tg:task:w 1*") == b"closed"
    assert redis_server.command("GET", "tg:task:w2") == b"open"
    assert 3_599_000 < int(redis_server.command("PTTL", "tg:task:w 1*") or 0) <= 3_600_000
    assert 59_000 < int(redis_server.command("PTTL", "tg:task:w2") or 0) <= 60_000
    assert redis_server.command("DBSIZE") == b"2"


def test_mget_of_1000_keys_is_one_command(
    cache: RedisCache, redis_server: RedisServer, round_trips: list[int]
) -> None:
    workids = [f"w{i}" for i in range(1000)]
    cache.put_many([(w, True) for w in workids[::2]])
    before = redis_server.info_commandstats()
    round_trips.clear()

    values = cache.get_many(workids)

    after = redis_server.info_commandstats()
    assert values == [True, None] * 500
    assert after.get("mget", 0) - before.get("mget", 0) == 1
    assert after.get("get", 0) == before.get("get", 0)
    assert len(round_trips) == 1


def test_put_many_is_one_round_trip(
    cache: RedisCache, redis_server: RedisServer, round_trips: list[int]
) -> None:
    cache.get("warm-up")  # the connection handshake is not part of the batch
    round_trips.clear()

    cache.put_many([(f"w{i}", i % 3 != 0) for i in range(300)])

    assert len(round_trips) == 1
    calls = redis_server.info_commandstats()
    assert calls["set"] == 300
    assert "multi" not in calls  # a plain pipeline, not a transaction
    assert cache.get_many(["w0", "w1"]) == [False, True]


def test_dead_server_is_a_fast_miss_and_writes_resume_after_restart(
    cache: RedisCache, redis_server: RedisServer, stats: Stats
) -> None:
    cache.put("w", True)
    redis_server.stop()

    value, elapsed = _timed(cache.get, "w")
    assert value is None
    assert elapsed < TIMEOUT
    assert stats.snapshot()["redis_errors"] == 1
    assert cache.get_many(["w", "v"]) == [None, None]  # breaker open: nothing sent
    assert stats.snapshot()["redis_skipped"] == 1

    redis_server.start()  # same port, empty (no persistence)
    time.sleep(COOLDOWN)
    cache.put("v", True)  # the probe: the pool reconnects by itself
    cache.put("w", True)

    assert redis_server.command("GET", "tg:task:v") == b"closed"
    assert cache.get_many(["v", "w"]) == [True, True]
    assert stats.snapshot()["redis_errors"] == 1


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled-connection", "new-connection"])
def test_frozen_server_costs_one_timeout_then_nothing_while_open(
    redis_url: str, redis_server: RedisServer, stats: Stats, pooled: bool
) -> None:
    cache = RedisCache(client_from_url(redis_url, timeout=TIMEOUT), **_options(stats))
    try:
        if pooled:
            cache.put("w", True)
        redis_server.freeze()

        value, elapsed = _timed(cache.get, "w")
        assert value is None
        assert TIMEOUT * 0.8 < elapsed < TIMEOUT + 0.3  # no retries behind our back
        for call, args in [(cache.get, ("w",)), (cache.put, ("w", True))]:
            _, elapsed = _timed(call, *args)
            assert elapsed < 0.05  # breaker open: nothing sent

        time.sleep(COOLDOWN)
        _, elapsed = _timed(cache.get_many, ["w"])  # the probe pays one timeout again
        assert elapsed < TIMEOUT + 0.3
        assert stats.snapshot()["redis_errors"] == 2
        assert stats.snapshot()["redis_skipped"] == 2
    finally:
        redis_server.thaw()
        cache.close()


async def test_async_frozen_server_costs_one_timeout(
    acache: AsyncRedisCache, redis_server: RedisServer, stats: Stats
) -> None:
    await acache.put("w", True)
    redis_server.freeze()

    start = time.monotonic()
    assert await acache.get_many(["w"]) == [None]
    assert time.monotonic() - start < TIMEOUT + 0.3
    start = time.monotonic()
    assert await acache.get("w") is None
    assert time.monotonic() - start < 0.05
    assert stats.snapshot()["redis_errors"] == 1


async def test_500_coroutines_share_a_small_pool(acache: AsyncRedisCache, stats: Stats) -> None:
    await acache.put_many([(f"w{i}", True) for i in range(0, 500, 2)])

    async def one(i: int) -> bool | None:
        if i % 5 == 0:
            await acache.put(f"x{i}", True)
        return await acache.get(f"w{i}")

    values = await asyncio.gather(*(one(i) for i in range(500)))

    assert values == [True, None] * 250
    assert stats.snapshot()["redis_errors"] == 0
    assert acache.client.connection_pool.max_connections == 4  # type: ignore[attr-defined]


def test_many_threads_share_a_small_pool(redis_url: str, stats: Stats) -> None:
    cache = RedisCache(
        client_from_url(redis_url, timeout=TIMEOUT, max_connections=4), **_options(stats)
    )
    failures: list[BaseException] = []
    start = threading.Barrier(64)

    def work(n: int) -> None:
        start.wait()
        try:
            for i in range(20):
                cache.put(f"t{n}-{i}", True)
                if cache.get(f"t{n}-{i}") is not True:
                    failures.append(AssertionError(f"t{n}-{i} not read back"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        cache.close()

    assert failures == []
    assert stats.snapshot()["redis_errors"] == 0
