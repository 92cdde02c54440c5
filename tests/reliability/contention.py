"""Scenario drivers: many threads or coroutines over overlapping workids.

See :mod:`reliability.scenarios` for how drivers, tests and the report fit together.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
import time
from dataclasses import dataclass, field

from reliability.scenarios import JOIN_TIMEOUT, run_threads
from taskguard import (
    AsyncTaskGuard,
    TaskGuard,
    TaskGuardSettings,
)
from taskguard.testing import FakeTaskStateService

# -- 6. concurrency ---------------------------------------------------------------------


@dataclass
class ConcurrencyResult:
    """Many threads or coroutines over overlapping workids, all closed."""

    driver: str
    workids: int
    calls: int  # calls into the guard's entry points
    checks_made: int  # workids those calls asked about (check_many: its unique ones)
    face_calls: int  # decorator and task() calls
    requests: int  # service requests
    requests_per_workid: tuple[int, int]  # (fewest, most)
    failures: list[str]
    stats: dict[str, int]
    invariants: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0


def stats_invariants(
    stats: dict[str, int], *, checks_made: int, face_calls: int, requests: int
) -> dict[str, bool]:
    """What the counters must satisfy, whatever the interleaving (see core.py):

    * every check is answered by exactly one of: the in-process tier, Redis, a
      lookup it led, a lookup it joined, or a refusal by the open breaker;
    * every request sent is a lookup's first attempt or a retry;
    * every face decision is a skip or a run;
    * a lookup that failed, or a refusal, is one error; a joined failure is not.
    """
    s = stats
    answered = s["local_hits"] + s["redis_hits"] + s["lookups"] + s["coalesced"]
    return {
        "checks == local_hits + redis_hits + lookups + coalesced + breaker_rejections": (
            s["checks"] == answered + s["breaker_rejections"]
        ),
        "checks == workids asked about": s["checks"] == checks_made,
        "service_calls == lookups + retries": s["service_calls"] == s["lookups"] + s["retries"],
        "service_calls == requests the service received": s["service_calls"] == requests,
        "skips + processed == face calls": s["skips"] + s["processed"] == face_calls,
        "errors <= lookups + breaker_rejections": (
            s["errors"] <= s["lookups"] + s["breaker_rejections"]
        ),
    }


def _concurrency_result(
    driver: str,
    workids: list[str],
    service: FakeTaskStateService,
    counts: collections.Counter[str],
    failures: list[str],
    stats: dict[str, int],
    started: float,
) -> ConcurrencyResult:
    per = [service.requests_for(w) for w in workids]
    result = ConcurrencyResult(
        driver=driver,
        workids=len(workids),
        calls=counts["calls"],
        checks_made=counts["checks"],
        face_calls=counts["faces"],
        requests=service.requests,
        requests_per_workid=(min(per), max(per)),
        failures=failures,
        stats=stats,
        seconds=time.monotonic() - started,
    )
    result.invariants = stats_invariants(
        stats, checks_made=counts["checks"], face_calls=counts["faces"], requests=service.requests
    )
    return result


def concurrency_sync(
    *, threads: int = 16, workids: int = 500, latency: float = 0.002, redis_url: str | None = None
) -> ConcurrencyResult:
    """``threads`` threads each ask about every workid (all closed), in their own
    order, through check / is_closed / check_many / the decorator / task()."""
    wids = [f"cc-{n}" for n in range(workids)]
    service = FakeTaskStateService(closed=wids)
    service.latency = latency
    settings = TaskGuardSettings(redis_url=redis_url, redis_timeout=2.0, key_prefix="conc")
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    failures: list[str] = []
    started = time.monotonic()
    with TaskGuard(settings, transport=service) as guard:

        @guard.skip_if_closed
        def handler(workid: str) -> None:
            failures.append(f"handler ran for closed {workid}")

        def worker(n: int) -> None:
            order = random.Random(n).sample(wids, len(wids))
            mine: collections.Counter[str] = collections.Counter()
            try:
                for i, wid in enumerate(order):
                    kind = (n + i) % 5
                    mine["calls"] += 1
                    if kind == 0:
                        batch = order[i : i + 3]
                        if not all(s.closed for s in guard.check_many(batch).values()):
                            failures.append(f"check_many saw an open task in {batch}")
                        mine["checks"] += len(set(batch))
                        continue
                    mine["checks"] += 1
                    if kind == 1:
                        ok = guard.check(wid).closed
                    elif kind == 2:
                        ok = guard.is_closed(wid)
                    elif kind == 3:
                        mine["faces"] += 1
                        handler(wid)
                        ok = True
                    else:
                        mine["faces"] += 1
                        with guard.task(wid) as handle:
                            ok = handle.skip and handle.closed
                    if not ok:
                        failures.append(f"{wid} not seen closed")
            except Exception as exc:  # recorded, then asserted on
                failures.append(f"{type(exc).__name__}: {exc}")
            with lock:
                counts.update(mine)

        run_threads(worker, threads)
        stats = guard.stats()
    where = "Redis" if redis_url else "memory"
    return _concurrency_result(
        f"TaskGuard, {threads} threads, {where}", wids, service, counts, failures, stats, started
    )


async def concurrency_async(
    *, tasks: int = 2000, workids: int = 500, latency: float = 0.005, redis_url: str | None = None
) -> ConcurrencyResult:
    """``tasks`` asyncio tasks started at once over ``workids`` workids (all closed),
    each through one of check / is_closed / check_many / the decorator / task()."""
    wids = [f"ca-{n}" for n in range(workids)]
    service = FakeTaskStateService(closed=wids)
    service.latency = latency
    settings = TaskGuardSettings(redis_url=redis_url, redis_timeout=2.0, key_prefix="conca")
    counts: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    order = random.Random(5).sample(wids, len(wids))
    started = time.monotonic()
    async with AsyncTaskGuard(settings, transport=service) as guard:

        @guard.skip_if_closed
        async def handler(workid: str) -> None:
            failures.append(f"handler ran for closed {workid}")

        async def one(i: int) -> None:
            wid = order[i % len(order)]
            kind = i % 5
            counts["calls"] += 1
            try:
                if kind == 0:
                    batch = [order[(i + k) % len(order)] for k in range(3)]
                    counts["checks"] += len(set(batch))
                    states = await guard.check_many(batch)
                    ok = all(s.closed for s in states.values())
                else:
                    counts["checks"] += 1
                    if kind == 1:
                        ok = (await guard.check(wid)).closed
                    elif kind == 2:
                        ok = await guard.is_closed(wid)
                    elif kind == 3:
                        counts["faces"] += 1
                        await handler(wid)
                        ok = True
                    else:
                        counts["faces"] += 1
                        async with guard.task(wid) as handle:
                            ok = handle.skip and handle.closed
                if not ok:
                    failures.append(f"{wid} not seen closed")
            except Exception as exc:  # recorded, then asserted on
                failures.append(f"{type(exc).__name__}: {exc}")

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(tasks))), JOIN_TIMEOUT)
        stats = guard.stats()
    where = "Redis" if redis_url else "memory"
    return _concurrency_result(
        f"AsyncTaskGuard, {tasks:,} tasks, {where}", wids, service, counts, failures, stats, started
    )
