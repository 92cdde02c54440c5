"""P2, P3, P6 (Redis), P7: the shared tier against raw redis-py on the same server.

Every guard here has its local tier off (``local_cache_size=0``) so that each
check really goes to Redis, and an in-process service as its transport whose
request counter proves that Redis answered everything. The raw side is a plain
``redis.Redis(host, port)``, the building block a hand-written cache would use.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import redis

from benchmarks.harness import Context, Figure, median, per_call, ratios, rounds, settings, us
from benchmarks.peers import PeerUnavailable, powertools_hit
from taskguard import TaskGuard
from taskguard.breaker import Breaker, Stats
from taskguard.cache.clients import client_from_url
from taskguard.cache.redis import RedisCache
from taskguard.testing import FakeTaskStateService

__all__ = ["p2", "p3", "p6_redis", "p7"]

PREFIX = "taskguard:task:"  # the default key_prefix's layout, DESIGN section 4
TTL_MS = 3_600_000


def _raw(ctx: Context) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=ctx.redis_port)


def _preload(client: redis.Redis, values: dict[str, str]) -> None:
    """Write ``{workid: "closed"|"open"}`` in the guard's layout, 10,000 per pipeline."""
    items = list(values.items())
    for start in range(0, len(items), 10_000):
        pipe = client.pipeline(transaction=False)
        for wid, value in items[start : start + 10_000]:
            pipe.set(PREFIX + wid, value, px=TTL_MS)
        pipe.execute()


class _RedisGuard:
    """A guard on this run's Redis with the local tier off, and its service."""

    def __init__(self, ctx: Context, **overrides: object) -> None:
        self.service = FakeTaskStateService()
        s = settings(redis_url=ctx.redis_url, local_cache_size=0, **overrides)
        self.guard = TaskGuard(s, transport=self.service)

    def __enter__(self) -> TaskGuard:
        return self.guard

    def __exit__(self, *exc_info: object) -> None:
        self.guard.close()
        if exc_info[0] is None and self.service.requests:
            raise RuntimeError(f"{self.service.requests} checks missed Redis")


def _commands_per_call(client: redis.Redis, call: Callable[[], object]) -> dict[str, float]:
    """Redis commands one ``call()`` sends, from INFO commandstats (10 calls averaged)."""

    def counts() -> dict[str, int]:
        stats = client.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    before = counts()
    for _ in range(10):
        call()
    after = counts()
    return {
        name: (after[name] - before.get(name, 0)) / 10
        for name in after
        if name != "info" and after[name] != before.get(name, 0)
    }


def p2(ctx: Context) -> list[Figure]:
    mode = ctx.mode("client + redis-server")
    ratio = Figure("P2", "check() answered by Redis / raw redis-py GET", "x", ("<=", 1.1), mode)
    peer = Figure(
        "P2", "check() via Redis vs Powertools Redis hit (faster by)", "x", (">=", 4.0), mode
    )
    raw = _raw(ctx)
    wid = "p2-closed-0001"
    key = PREFIX + wid
    raw.set(key, "closed", px=TTL_MS)
    # The guard's own kind of client (a blocking pool with timeouts), raw: it
    # tells how much of the gap is redis-py's pool rather than taskguard.
    pooled = client_from_url(ctx.redis_url, timeout=0.5)
    n, m = ctx.scale.p2_calls, ctx.scale.p2_peer_calls
    with _RedisGuard(ctx) as guard:
        if guard.check(wid).origin != "redis":
            raise RuntimeError("P2: the check was not answered by Redis")
        guard_trips = _commands_per_call(raw, lambda: guard.check(wid))
        sides: dict[str, Callable[[], float]] = {
            "check": lambda: per_call(guard.check, itertools.repeat(wid, n), n),
            "raw_get": lambda: per_call(raw.get, itertools.repeat(key, n), n),
            "pooled_get": lambda: per_call(pooled.get, itertools.repeat(key, n), n),
        }
        try:
            pt = powertools_hit("127.0.0.1", ctx.redis_port, local_cache=False, workid=wid)
        except PeerUnavailable as exc:
            peer.note = f"peer unavailable: {exc}"
        else:
            task = {"workid": wid}
            sides["powertools"] = lambda: per_call(pt, itertools.repeat(task, m), m)
            trips = _commands_per_call(raw, lambda: pt(task))
        for side in sides.values():
            side()
        got = rounds(sides, ctx.scale.rounds)
    pooled.close()
    raw.close()
    ratio.value = median(ratios(got["check"], got["raw_get"]))
    ratio.raw = {
        "calls_per_round": n,
        "check_us": us(got["check"]),
        "raw_get_us": us(got["raw_get"]),
        "blocking_pool_get_us": us(got["pooled_get"]),
        "raw_client": "redis.Redis(host, port): redis-py defaults",
        "guard_commands_per_check": guard_trips,
    }
    ratio.note = (
        f"check {median(got['check']) * 1e6:.1f} µs, GET {median(got['raw_get']) * 1e6:.1f} µs"
    )
    if "powertools" in got:
        peer.value = median(ratios(got["powertools"], got["check"]))
        peer.raw = {
            "powertools_redis_hit_us": us(got["powertools"]),
            "calls_per_round": m,
            "powertools_commands_per_hit": trips,
        }
        peer.note = (
            f"Powertools Redis hit: {median(got['powertools']) * 1e6:.0f} µs, "
            + ", ".join(f"{count:g} {name.upper()}" for name, count in sorted(trips.items()))
            + " per hit"
        )
    return [ratio, peer]


def p3(ctx: Context) -> list[Figure]:
    mode = ctx.mode("client + redis-server")
    vs_mget = Figure(
        "P3",
        "check_many(1,000) all in Redis / one raw MGET of the 1,000 keys",
        "x",
        ("<=", 1.5),
        mode,
    )
    vs_loop = Figure(
        "P3", "check_many(1,000) / 1,000 single check() calls", "x", ("<=", 0.05), mode
    )
    raw = _raw(ctx)
    wids = [f"p3-{i:06d}" for i in range(1000)]
    keys = [PREFIX + w for w in wids]
    _preload(raw, dict.fromkeys(wids, "closed"))
    reps = ctx.scale.p3_reps
    with _RedisGuard(ctx) as guard:
        if len(guard.check_many(wids)) != 1000:
            raise RuntimeError("P3: check_many did not answer every workid")
        sides = {
            "check_many": lambda: per_call(guard.check_many, itertools.repeat(wids, reps), reps),
            "mget": lambda: per_call(raw.mget, itertools.repeat(keys, reps), reps),
            "singles": lambda: per_call(guard.check, wids, 1),
        }
        for side in sides.values():
            side()
        got = rounds(sides, ctx.scale.p3_rounds)
    raw.close()
    vs_mget.value = median(ratios(got["check_many"], got["mget"]))
    vs_loop.value = median(ratios(got["check_many"], got["singles"]))
    vs_mget.raw = {
        "batches_per_round": reps,
        "check_many_us": us(got["check_many"]),
        "mget_us": us(got["mget"]),
    }
    vs_loop.raw = {"singles_1000_us": us(got["singles"])}
    vs_mget.note = (
        f"check_many {median(got['check_many']) * 1e3:.2f} ms, "
        f"MGET {median(got['mget']) * 1e3:.2f} ms"
    )
    vs_loop.note = f"1,000 check() {median(got['singles']) * 1e3:.1f} ms"
    return [vs_mget, vs_loop]


def p7(ctx: Context) -> list[Figure]:
    mode = ctx.mode("client + redis-server")
    rate = Figure(
        "P7", "open_only, 1/3 closed, all in Redis, batch_size=500", "tasks/s", None, mode
    )
    ratio = Figure("P7", "open_only / the same loop over raw MGET batches", "x", ("<=", 1.3), mode)
    total = ctx.scale.p7_tasks
    tasks = [{"workid": f"p7-{i:07d}", "channel": "chat"} for i in range(total)]
    raw = _raw(ctx)
    _preload(raw, {t["workid"]: "closed" if i % 3 == 0 else "open" for i, t in enumerate(tasks)})
    expected = total - len(range(0, total, 3))

    def raw_open(batch: int = 500) -> Iterator[dict[str, str]]:
        for start in range(0, total, batch):
            chunk = tasks[start : start + batch]
            values = raw.mget([PREFIX + t["workid"] for t in chunk])
            for task, value in zip(chunk, values, strict=True):
                if value != b"closed":
                    yield task

    with _RedisGuard(ctx) as guard:

        def timed(source: Callable[[], Iterator[dict[str, str]]]) -> float:
            started = time.perf_counter()
            count = sum(1 for _ in source())
            elapsed = time.perf_counter() - started
            if count != expected:
                raise RuntimeError(f"P7: {count} open tasks, expected {expected}")
            return elapsed

        sides = {
            "open_only": lambda: timed(lambda: guard.open_only(tasks, batch_size=500)),
            "raw_mget": lambda: timed(raw_open),
        }
        for side in sides.values():
            side()
        got = rounds(sides, ctx.scale.rounds)
    raw.close()
    rate.value = total / median(got["open_only"])
    ratio.value = median(ratios(got["open_only"], got["raw_mget"]))
    rate.raw = {"tasks": total, "open": expected, "open_only_s": got["open_only"]}
    ratio.raw = {"raw_mget_loop_s": got["raw_mget"]}
    ratio.note = f"raw MGET loop: {total / median(got['raw_mget']):,.0f} tasks/s"
    return [rate, ratio]


def p6_redis(ctx: Context) -> list[Figure]:
    count = ctx.scale.p6_redis
    fig = Figure(
        "P6",
        "Redis used_memory growth per 1,000,000 closed workids",
        "MB",
        None,
        "redis-server (jemalloc), written by the guard's own RedisCache.put_many",
    )
    raw = _raw(ctx)
    raw.flushall()
    before = int(raw.info("memory")["used_memory"])
    # The library's own write path (what a guard calls after a lookup), with the
    # default settings: the layout measured is the layout a deployment gets.
    defaults = settings()
    client = client_from_url(ctx.redis_url, timeout=5.0)
    cache = RedisCache(
        client,
        key_prefix=defaults.key_prefix,
        closed_ttl=defaults.closed_ttl,
        open_ttl=defaults.open_ttl,
        breaker=Breaker(threshold=0, cooldown=1.0),
        stats=Stats(),
    )
    base = 1_000_000_000
    for start in range(0, count, 10_000):
        cache.put_many([(str(base + i), True) for i in range(start, min(count, start + 10_000))])
    client.close()
    sample = cache.key(str(base))
    ttl = raw.pttl(sample)
    per_key = raw.memory_usage(sample)
    keys = raw.dbsize()
    after = int(raw.info("memory")["used_memory"])
    raw.flushall()
    raw.close()
    if keys != count:
        raise RuntimeError(f"P6: {keys} keys in Redis, expected {count}")
    growth = after - before
    fig.value = growth * (1_000_000 / count) / 1e6
    fig.raw = {
        "workids": count,
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_workid": round(growth / count, 1),
        "memory_usage_one_key": per_key,
        "layout": {
            "key": f"{sample} ({len(sample)} bytes: prefix 'taskguard:task:' + 10-digit workid)",
            "value": "closed",
            "ttl": f"PX {ttl} ms left of closed_ttl (an entry in Redis' expires table)",
        },
    }
    fig.note = (
        f"{growth / count:.0f} B per workid; key '{sample}' = 'closed' with a TTL "
        f"(one string key per workid, DESIGN section 4)"
    )
    return [fig]
