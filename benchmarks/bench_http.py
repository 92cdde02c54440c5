"""P4 and P5: lookups that go to the CheckTaskState service.

P4 times cold checks (workids no cache has seen; the service answers open, and
``open_ttl=0`` keeps open answers out of every cache) through the reference
service in a child process, against the raw floor on the same server: a
keep-alive ``http.client`` POST of the same envelope plus ``json.loads`` (sync),
and aiohttp with a semaphore of 100 (async).

P5 counts service calls while many checks of the same uncached workids run at
once. The in-process service is used because its request counter is exact,
and it waits ``p5_latency`` before answering so that the checks really overlap.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from benchmarks.harness import (
    TIMES,
    Context,
    Figure,
    median,
    per_call,
    ratios,
    rounds,
    settings,
    us,
)
from taskguard import AsyncTaskGuard, TaskGuard
from taskguard.testing import FakeTaskStateService

__all__ = ["p4", "p5"]

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _envelope(workid: str) -> bytes:
    """The request envelope the guard sends (DESIGN section 1), with default settings."""
    return _encode(
        {
            "channel": "Salesforce",
            "topic": "Call",
            "subtopic": "CheckTaskState",
            "source": "taskguard",
            "data": {"workid": workid},
        }
    ).encode()


class _Unique:
    """Fresh workids, never asked before in this run: every check is cold."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.next = 0

    def take(self, n: int) -> list[str]:
        start, self.next = self.next, self.next + n
        return [f"{self.prefix}-{i:08d}" for i in range(start, start + n)]


def p4(ctx: Context) -> list[Figure]:
    mode = ctx.mode("client + reference service (child process)")
    sync = Figure(
        "P4",
        "cold check() over HTTP / http.client keep-alive POST + json.loads",
        "x",
        ("<=", 1.5),
        mode,
    )
    aio = Figure(
        "P4",
        "async check_many(1,000 cold, 100 in flight): throughput / raw aiohttp",
        "x",
        (">=", 0.5),
        mode,
    )
    _p4_sync(ctx, sync)
    _p4_async(ctx, aio)
    return [sync, aio]


def _p4_sync(ctx: Context, fig: Figure) -> None:
    got = _p4_sync_rounds(ctx, ctx.service_url)
    fig.value = median(ratios(got["check"], got["http_client"]))
    urllib3_ratio = median(ratios(got["urllib3"], got["http_client"]))
    fig.raw = {
        "calls_per_round": ctx.scale.p4_calls,
        "check_us": us(got["check"]),
        "http_client_us": us(got["http_client"]),
        "urllib3_us": us(got["urllib3"]),
        "urllib3_over_http_client": urllib3_ratio,
    }
    fig.note = (
        f"check {median(got['check']) * 1e6:.0f} µs, "
        f"http.client {median(got['http_client']) * 1e6:.0f} µs; "
        f"raw urllib3 alone {urllib3_ratio:.2f}{TIMES}"
    )
    if ctx.far_service_url is not None:
        # The same figure with the service on another core than the client: the
        # server no longer evicts the client's caches between its calls.
        far = _p4_sync_rounds(ctx, ctx.far_service_url)
        far_ratio = median(ratios(far["check"], far["http_client"]))
        far_urllib3 = median(ratios(far["urllib3"], far["http_client"]))
        fig.raw["service_on_another_core"] = {
            "check_us": us(far["check"]),
            "http_client_us": us(far["http_client"]),
            "urllib3_us": us(far["urllib3"]),
            "check_over_http_client": far_ratio,
            "urllib3_over_http_client": far_urllib3,
        }
        fig.note += (
            f"; service on another core: {far_ratio:.2f}{TIMES} "
            f"(urllib3 alone {far_urllib3:.2f}{TIMES})"
        )


def _p4_sync_rounds(ctx: Context, url: str) -> dict[str, list[float]]:
    """Per-call seconds of a cold ``check()`` and of the raw floors, in rounds."""
    import urllib3

    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port, parts.path
    n = ctx.scale.p4_calls
    ids = {side: _Unique(f"p4s-{side}-{port}") for side in ("check", "raw", "urllib3")}
    conn = http.client.HTTPConnection(host, port, timeout=10)
    # urllib3 as the guard's transport uses it, raw: how much of the gap is urllib3's.
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, retries=False)

    def raw_check(workid: str) -> bool:
        conn.request("POST", path, _envelope(workid), _HEADERS)
        closed: bool = json.loads(conn.getresponse().read())["data"]["isClosed"]
        return closed

    def urllib3_check(workid: str) -> bool:
        body = pool.urlopen("POST", path, body=_envelope(workid), headers=_HEADERS).data
        closed: bool = json.loads(body)["data"]["isClosed"]
        return closed

    with TaskGuard(settings(service_url=url)) as guard:  # its urllib3 transport, no Redis
        first = guard.check(ids["check"].take(1)[0])
        if first.closed or first.origin != "service":
            raise RuntimeError("P4: the service did not answer open")
        if raw_check(ids["raw"].take(1)[0]) or urllib3_check(ids["urllib3"].take(1)[0]):
            raise RuntimeError("P4: the service did not answer open")
        sides = {
            "check": lambda: per_call(guard.check, ids["check"].take(n), n),
            "http_client": lambda: per_call(raw_check, ids["raw"].take(n), n),
            "urllib3": lambda: per_call(urllib3_check, ids["urllib3"].take(n), n),
        }
        for side in sides.values():
            side()
        got = rounds(sides, ctx.scale.rounds)
        stats = guard.stats()
    conn.close()
    pool.close()
    if stats["local_hits"] or stats["service_calls"] != stats["checks"]:
        raise RuntimeError(f"P4: some checks were not cold: {stats}")
    return got


def _p4_async(ctx: Context, fig: Figure) -> None:
    got = asyncio.run(_p4_async_rounds(ctx))
    # Throughput ratio = guard lookups/s over raw lookups/s = raw time / guard time.
    fig.value = median(ratios(got["aiohttp"], got["check_many"]))
    fig.raw = {
        "lookups_per_batch": 1000,
        "in_flight": 100,
        "check_many_s": got["check_many"],
        "aiohttp_s": got["aiohttp"],
    }
    fig.note = (
        f"check_many {1000 / median(got['check_many']):,.0f} lookups/s, "
        f"aiohttp {1000 / median(got['aiohttp']):,.0f}/s"
    )


async def _p4_async_rounds(ctx: Context) -> dict[str, list[float]]:
    import aiohttp

    url = ctx.service_url
    guard_ids, raw_ids = _Unique("p4a-guard"), _Unique("p4a-raw")
    limit = asyncio.Semaphore(100)
    connector = aiohttp.TCPConnector(limit=100)
    async with (
        AsyncTaskGuard(settings(service_url=url, lookup_concurrency=100)) as guard,
        aiohttp.ClientSession(connector=connector) as session,
    ):

        async def raw_one(workid: str) -> bool:
            async with limit, session.post(url, data=_envelope(workid), headers=_HEADERS) as resp:
                answer = json.loads(await resp.read())
                closed: bool = answer["data"]["isClosed"]
                return closed

        async def timed_guard(batch: int) -> float:
            wids = guard_ids.take(batch)
            started = time.perf_counter()
            states = await guard.check_many(wids)
            elapsed = time.perf_counter() - started
            if len(states) != batch or any(s.origin != "service" for s in states.values()):
                raise RuntimeError("P4: check_many did not look every workid up")
            return elapsed

        async def timed_raw(batch: int) -> float:
            wids = raw_ids.take(batch)
            started = time.perf_counter()
            answers = await asyncio.gather(*(raw_one(w) for w in wids))
            elapsed = time.perf_counter() - started
            if any(answers):
                raise RuntimeError("P4: the service did not answer open")
            return elapsed

        await timed_guard(200)  # warm up: open the 100 connections on each side
        await timed_raw(200)
        got: dict[str, list[float]] = {"check_many": [], "aiohttp": []}
        for i in range(ctx.scale.p4_async_rounds):
            order = [("check_many", timed_guard), ("aiohttp", timed_raw)]
            for name, side in order if i % 2 == 0 else order[::-1]:
                got[name].append(await side(1000))
        return got


def p5(ctx: Context) -> list[Figure]:
    latency = ctx.scale.p5_latency
    mode = f"in-process service answering after {latency:g} s"
    aio = Figure(
        "P5",
        "coalescing: 1,000 concurrent async checks of 100 uncached workids",
        "calls",
        ("==", 100),
        mode,
    )
    threads = Figure(
        "P5", "coalescing: 32 threads checking one uncached workid", "calls", ("==", 1), mode
    )
    aio.value, aio.raw = asyncio.run(_p5_async(latency))
    threads.value, threads.raw = _p5_threads(latency)
    aio.note = "service calls counted by the service (exact)"
    threads.note = aio.note
    return [aio, threads]


async def _p5_async(latency: float) -> tuple[float, dict[str, Any]]:
    service = FakeTaskStateService()
    service.latency = latency
    wids = [f"p5a-{i:03d}" for i in range(100)]
    async with AsyncTaskGuard(settings(), transport=service) as guard:
        states = await asyncio.gather(*(guard.check(wids[i % 100]) for i in range(1000)))
        stats = guard.stats()
    if len(states) != 1000 or any(s.closed for s in states):
        raise RuntimeError("P5: the async checks did not all answer open")
    return float(service.requests), {
        "checks": 1000,
        "workids": 100,
        "service_requests": service.requests,
        "coalesced": stats["coalesced"],
    }


def _p5_threads(latency: float) -> tuple[float, dict[str, Any]]:
    service = FakeTaskStateService()
    service.latency = latency
    start = threading.Barrier(32)
    answers: list[bool] = []
    lock = threading.Lock()
    with TaskGuard(settings(), transport=service) as guard:

        def worker() -> None:
            start.wait(timeout=30)
            state = guard.check("p5t-solo")
            with lock:
                answers.append(state.closed)

        pool = [threading.Thread(target=worker, daemon=True) for _ in range(32)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=60)
        stats = guard.stats()
    if len(answers) != 32 or any(answers):
        raise RuntimeError(f"P5: {len(answers)} of 32 threads got an open answer")
    return float(service.requests), {
        "threads": 32,
        "service_requests": service.requests,
        "coalesced": stats["coalesced"],
    }
