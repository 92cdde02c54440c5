"""RedisCache and AsyncRedisCache against fakeredis: the key layout, TTLs, decoding,
and how Redis failures become cache misses behind the breaker.

Most tests run twice, once per driver: a ``Driver`` awaits the async cache's
methods and calls the sync cache's directly, so one test body checks both.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
import redis
import redis.asyncio

from taskguard.breaker import Breaker, Stats
from taskguard.cache.redis import (
    AsyncRedisCache,
    RedisCache,
    async_client_from_url,
    client_from_url,
    redacted_url,
)

CLOSED_TTL, OPEN_TTL, COOLDOWN = 3600.0, 30.0, 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Driver:
    """One cache (sync or async) and what a test needs around it."""

    def __init__(self, cache: RedisCache | AsyncRedisCache, stats: Stats, clock: FakeClock) -> None:
        self.cache = cache
        self.stats = stats
        self.clock = clock

    async def run(self, method: str, *args: Any) -> Any:
        result = getattr(self.cache, method)(*args)
        return await result if inspect.isawaitable(result) else result

    def count(self, name: str) -> int:
        return self.stats.snapshot()[name]


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def raw(server: fakeredis.FakeServer) -> Any:
    """A plain client on the same fake server, to look at what the cache wrote."""
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


MakeDriver = Callable[..., Driver]


@pytest.fixture(params=["sync", "async"])
async def make(
    request: pytest.FixtureRequest, server: fakeredis.FakeServer
) -> AsyncIterator[MakeDriver]:
    clients: list[Any] = []

    def build(
        *, open_ttl: float = OPEN_TTL, decode_responses: bool = False, threshold: int = 1
    ) -> Driver:
        clock, stats = FakeClock(), Stats()
        options: dict[str, Any] = {
            "key_prefix": "tg",
            "closed_ttl": CLOSED_TTL,
            "open_ttl": open_ttl,
            "breaker": Breaker(threshold=threshold, cooldown=COOLDOWN, clock=clock),
            "stats": stats,
        }
        cache: RedisCache | AsyncRedisCache
        client: Any
        if request.param == "sync":
            client = fakeredis.FakeRedis(server=server, decode_responses=decode_responses)
            cache = RedisCache(client, **options)
        else:
            client = fakeredis.aioredis.FakeRedis(server=server, decode_responses=decode_responses)
            cache = AsyncRedisCache(client, **options)
        clients.append(client)
        return Driver(cache, stats, clock)

    yield build
    for client in clients:
        if isinstance(client, fakeredis.aioredis.FakeRedis):
            await client.aclose()
        else:
            client.close()


# -- the layout ------------------------------------------------------------------


async def test_layout_is_one_string_key_per_workid(make: MakeDriver, raw: Any) -> None:
    d = make()
    await d.run("put", "w1", True)
    await d.run("put", "w2", False)

    assert sorted(raw.keys("*")) == [b"tg:task:w1", b"tg:task:w2"]
    assert raw.type("tg:task:w1") == b"string"
    assert raw.get("tg:task:w1") == b"closed"
    assert raw.get("tg:task:w2") == b"open"
    assert CLOSED_TTL * 1000 - 1000 < raw.pttl("tg:task:w1") <= CLOSED_TTL * 1000
    assert OPEN_TTL * 1000 - 1000 < raw.pttl("tg:task:w2") <= OPEN_TTL * 1000


async def test_reads_back_closed_open_and_miss(make: MakeDriver) -> None:
    d = make()
    await d.run("put", "c", True)
    await d.run("put", "o", False)

    assert await d.run("get", "c") is True
    assert await d.run("get", "o") is False
    assert await d.run("get", "x") is None
    assert await d.run("get_many", ["o", "x", "c", "c"]) == [False, None, True, True]
    assert await d.run("get_many", []) == []


async def test_open_answer_is_not_written_when_open_ttl_is_zero(make: MakeDriver, raw: Any) -> None:
    d = make(open_ttl=0)
    await d.run("put", "o1", False)
    await d.run("put_many", [("o2", False), ("c", True)])

    assert raw.keys("*") == [b"tg:task:c"]


async def test_open_answer_never_overwrites_closed(make: MakeDriver, raw: Any) -> None:
    d = make()
    await d.run("put", "w", True)
    await d.run("put", "w", False)
    await d.run("put_many", [("w", False)])
    assert await d.run("get", "w") is True

    await d.run("put", "v", False)
    await d.run("put", "v", True)  # a close replaces an open answer, with the closed TTL
    assert await d.run("get", "v") is True
    assert raw.pttl("tg:task:v") > OPEN_TTL * 1000


async def test_put_many_writes_every_answer(make: MakeDriver, raw: Any) -> None:
    d = make()
    await d.run("put_many", [("a", True), ("b", False), ("c", True)])
    await d.run("put_many", [])

    assert await d.run("get_many", ["a", "b", "c"]) == [True, False, True]
    assert raw.pttl("tg:task:a") > OPEN_TTL * 1000
    assert 0 < raw.pttl("tg:task:b") <= OPEN_TTL * 1000


async def test_delete_drops_only_that_workid(make: MakeDriver) -> None:
    d = make()
    await d.run("put_many", [("a", True), ("b", True)])
    await d.run("delete", "a")

    assert await d.run("get_many", ["a", "b"]) == [None, True]


WEIRD_WORKIDS = ["*", "a*", "?", "[ab]", "{tag}", "with space", "ünïcødé ✓", "tg:task:x"]


async def test_workids_are_literal_keys(make: MakeDriver, raw: Any) -> None:
    d = make()
    await d.run("put", "a", False)
    for workid in WEIRD_WORKIDS:
        await d.run("put", workid, True)

    expected = {f"tg:task:{w}".encode() for w in [*WEIRD_WORKIDS, "a"]}
    assert set(raw.keys("*")) == expected
    assert await d.run("get_many", WEIRD_WORKIDS) == [True] * len(WEIRD_WORKIDS)
    assert await d.run("get", "a") is False  # "*", "a*", "?" and "[ab]" matched nothing
    assert await d.run("get", "b") is None

    await d.run("delete", "*")
    assert await d.run("get", "*") is None
    assert len(raw.keys("*")) == len(expected) - 1


async def test_client_that_decodes_responses(make: MakeDriver) -> None:
    d = make(decode_responses=True)
    await d.run("put_many", [("c", True), ("o", False)])

    assert await d.run("get", "c") is True
    assert await d.run("get_many", ["c", "o", "x"]) == [True, False, None]


async def test_unknown_value_is_a_miss_logged_at_debug(
    make: MakeDriver, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    d = make()
    raw.set("tg:task:x", "maybe")
    raw.set("tg:task:c", "closed")
    caplog.set_level(logging.DEBUG, logger="taskguard.redis")

    assert await d.run("get", "x") is None
    assert await d.run("get_many", ["x", "c"]) == [None, True]
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "b'maybe'" in caplog.records[0].getMessage()
    assert d.count("redis_errors") == 0


async def test_refused_command_is_a_miss_and_keeps_redis_in_use(
    make: MakeDriver, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    d = make()
    raw.hset("tg:task:h", "field", "value")  # GET on a hash: the server answers WRONGTYPE

    assert await d.run("get", "h") is None
    assert await d.run("get", "h") is None
    assert d.count("redis_errors") == 2
    assert [r.levelno for r in caplog.records if r.name == "taskguard.redis"] == [logging.WARNING]
    # The server is up: the breaker stays closed and other commands go through.
    await d.run("put", "c", True)
    assert await d.run("get", "c") is True
    assert d.count("redis_skipped") == 0


# -- failures and the breaker -------------------------------------------------------


async def test_breaker_skips_commands_while_open_then_probes(
    make: MakeDriver, server: fakeredis.FakeServer, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskguard.redis")
    d = make()
    await d.run("put", "c", True)
    server.connected = False

    assert await d.run("get", "c") is None  # fails: the breaker opens
    assert d.count("redis_errors") == 1
    server.connected = True
    # Open: nothing is sent, although Redis would answer now.
    assert await d.run("get", "c") is None
    assert await d.run("get_many", ["c", "d"]) == [None, None]
    await d.run("put", "new", True)
    await d.run("put_many", [("new2", True)])
    await d.run("delete", "c")
    assert d.count("redis_skipped") == 5
    assert d.count("redis_errors") == 1
    assert raw.get("tg:task:new") is None
    assert raw.get("tg:task:c") == b"closed"

    d.clock.now += COOLDOWN  # the probe goes through and closes the breaker
    assert await d.run("get", "c") is True
    await d.run("put", "new", True)  # writes resume by themselves
    assert raw.get("tg:task:new") == b"closed"
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "taskguard.redis"]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
    assert "for 5 seconds" in messages[0][1]
    assert "answers again" in messages[1][1]


async def test_repeated_failures_are_counted_and_warned_once(
    make: MakeDriver, server: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    d = make()
    server.connected = False
    for _ in range(3):  # each probe fails again
        assert await d.run("get_many", ["a", "b"]) == [None, None]
        await d.run("put", "a", True)  # skipped: the breaker is open
        d.clock.now += COOLDOWN

    assert d.count("redis_errors") == 3
    assert d.count("redis_skipped") == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "taskguard.redis"
    assert "ConnectionError" in warnings[0].getMessage()


async def test_failures_below_the_threshold_keep_sending(
    make: MakeDriver, server: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    d = make(threshold=3)
    server.connected = False
    for _ in range(4):
        assert await d.run("get", "a") is None

    assert d.count("redis_errors") == 3
    assert d.count("redis_skipped") == 1
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_warning_names_the_server_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    client = client_from_url("redis://user:s3cret@127.0.0.1:1/2", timeout=0.5)
    cache = RedisCache(
        client,
        key_prefix="tg",
        closed_ttl=CLOSED_TTL,
        open_ttl=0,
        breaker=Breaker(threshold=1, cooldown=7),
        stats=Stats(),
        owns_client=True,
    )
    try:
        assert cache.get("w") is None
        assert cache.get_many(["w"]) == [None]
    finally:
        cache.close()

    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "redis://127.0.0.1:1/2" in message
    assert "asks the CheckTaskState service directly for 7 seconds" in message
    assert "s3cret" not in message


class _Hanging:
    """An asyncio client whose GET never answers."""

    async def get(self, name: str) -> Any:
        await asyncio.Event().wait()


async def test_cancelled_probe_lets_the_next_call_probe() -> None:
    clock, stats = FakeClock(), Stats()
    breaker = Breaker(threshold=1, cooldown=COOLDOWN, clock=clock)
    cache = AsyncRedisCache(
        _Hanging(),  # type: ignore[arg-type]
        key_prefix="tg",
        closed_ttl=CLOSED_TTL,
        open_ttl=0,
        breaker=breaker,
        stats=stats,
    )
    breaker.failure()
    clock.now += COOLDOWN

    probe = asyncio.create_task(cache.get("w"))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    assert breaker.allow()  # not stuck half-open behind a probe that will never end
    assert stats.snapshot()["redis_errors"] == 0


class _Failing:
    """A sync client whose GET raises what it is given."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.closed = 0

    def get(self, name: str) -> Any:
        raise self.error

    def close(self) -> None:
        self.closed += 1


def _cache(client: Any, *, owns_client: bool = False) -> RedisCache:
    return RedisCache(
        client,
        key_prefix="tg",
        closed_ttl=CLOSED_TTL,
        open_ttl=0,
        breaker=Breaker(threshold=1, cooldown=COOLDOWN),
        stats=Stats(),
        owns_client=owns_client,
    )


@pytest.mark.parametrize(
    "error", [redis.exceptions.TimeoutError("slow"), OSError("reset"), asyncio.TimeoutError()]
)
def test_socket_and_timeout_errors_are_misses(error: BaseException) -> None:
    assert _cache(_Failing(error)).get("w") is None


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyboardInterrupt()])
def test_other_errors_propagate(error: BaseException) -> None:
    with pytest.raises(type(error)):
        _cache(_Failing(error)).get("w")


def test_close_closes_only_a_client_the_cache_owns() -> None:
    given, built = _Failing(OSError()), _Failing(OSError())
    _cache(given).close()
    _cache(built, owns_client=True).close()

    assert (given.closed, built.closed) == (0, 1)


@pytest.mark.parametrize(("closed_ttl", "open_ttl"), [(0, 0), (-1, 0), (10, -1)])
def test_ttls_are_validated(closed_ttl: float, open_ttl: float) -> None:
    with pytest.raises(ValueError, match="_ttl"):
        RedisCache(
            _Failing(OSError()),  # type: ignore[arg-type]
            key_prefix="tg",
            closed_ttl=closed_ttl,
            open_ttl=open_ttl,
            breaker=Breaker(threshold=1, cooldown=1),
            stats=Stats(),
        )


# -- building clients ----------------------------------------------------------------


def test_client_from_url_bounds_every_wait_and_never_retries() -> None:
    client = client_from_url("redis://user:pw@127.0.0.1:7777/3", timeout=0.25)
    try:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert pool.timeout == 0.25
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
        assert kwargs["retry"].get_retries() == 0
        assert kwargs["protocol"] == 2
        assert kwargs["decode_responses"] is False
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("user", "pw", 3)
        connection = pool.make_connection()
        assert connection.retry.get_retries() == 0
        assert connection.retry_on_error == []
    finally:
        client.close()


async def test_async_client_from_url_blocks_for_a_free_connection() -> None:
    client = async_client_from_url("rediss://127.0.0.1:7777/0", timeout=0.25, max_connections=7)
    try:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
        assert (pool.timeout, pool.max_connections) == (0.25, 7)
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
        assert kwargs["retry"].get_retries() == 0
        assert pool.connection_class is redis.asyncio.SSLConnection
    finally:
        await client.aclose()


def test_url_options_cannot_undo_the_bounds(caplog: pytest.LogCaptureFixture) -> None:
    url = "redis://:pw@127.0.0.1:7777/0?socket_timeout=30&retry_on_timeout=yes&client_name=w1"
    client = client_from_url(url, timeout=0.5)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.5
        assert "retry_on_timeout" not in kwargs
        assert kwargs["client_name"] == "w1"  # other options still apply
    finally:
        client.close()
    (warning,) = caplog.records
    assert "retry_on_timeout, socket_timeout" in warning.getMessage()
    assert ":pw@" not in warning.getMessage()


def test_url_options_are_stripped_from_a_unix_socket_url() -> None:
    client = client_from_url("unix:///tmp/redis.sock?socket_timeout=30&db=4", timeout=0.5)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["path"], kwargs["db"], kwargs["socket_timeout"]) == (
            "/tmp/redis.sock",
            4,
            0.5,
        )
    finally:
        client.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:secret@host/1", "rediss://:***@host/1"),
        ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis://user@host", "redis://user@host"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
        ("unix://:secret@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("redis://u:p@ss:w@rd@host", "redis://u:***@host"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
