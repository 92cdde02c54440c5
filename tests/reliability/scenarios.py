"""Scenario drivers: the shared pieces, and Redis killed or frozen mid-run.

The drivers are split by theme: this module (Redis outages, the task ledger,
bounded waits), :mod:`reliability.faults` (a flaky or dead service),
:mod:`reliability.fleet` (the service breaker), :mod:`reliability.contention`
(concurrency), :mod:`reliability.wire` (fuzzing answers) and
:mod:`reliability.hardening` (bad input, secrets, Redis keys, TLS, ACL).

Each driver runs one scenario end to end against real parts (a real
``redis-server``, the reference service in-process or over loopback HTTP) and
returns a result object with every figure it measured. The tests in this folder
assert on those results; ``report.py`` prints them into README.md. Every wait is
bounded: a driver raises ``TimeoutError`` rather than hang.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis
from support.redis_server import RedisServer

from taskguard import (
    AsyncTaskGuard,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
    TaskStateUnknown,
)
from taskguard.testing import FakeTaskStateService

HANDLED = "handled"
JOIN_TIMEOUT = 60.0  # no scenario phase may take longer: a hang fails instead
OUTAGE_PREFIX = "outage"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


async def await_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`wait_until` for asyncio code."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)


def start_threads(target: Callable[[int], None], count: int) -> list[threading.Thread]:
    """Start ``count`` daemon threads running ``target(n)``."""
    pool = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
    for thread in pool:
        thread.start()
    return pool


def join_threads(pool: list[threading.Thread]) -> None:
    """Join every thread, each within ``JOIN_TIMEOUT``; ``TimeoutError`` if one hangs."""
    for thread in pool:
        thread.join(JOIN_TIMEOUT)
    if any(thread.is_alive() for thread in pool):
        raise TimeoutError("a thread is still running: the guard hung it")


def run_threads(target: Callable[[int], None], count: int) -> None:
    """:func:`start_threads`, then :func:`join_threads`."""
    join_threads(start_threads(target, count))


def inspector(server: RedisServer) -> redis.Redis:
    """A plain redis-py client for looking at what the guard left in Redis."""
    return redis.Redis(
        host="127.0.0.1", port=server.port, socket_timeout=5, decode_responses=True, protocol=2
    )


def existing(client: redis.Redis, keys: Sequence[str]) -> int:
    """How many of ``keys`` exist (one MGET per 1,000)."""
    found = 0
    for i in range(0, len(keys), 1000):
        found += sum(v is not None for v in client.mget(keys[i : i + 1000]))
    return found


# -- the task ledger: what happened to every task --------------------------------------


@dataclass(frozen=True)
class Task:
    """One queued task: its number in the run and its workid."""

    n: int
    workid: str


@dataclass(frozen=True)
class Record:
    """What the worker saw for one delivery of a task."""

    n: int
    kind: str  # "handled", "skipped" (the face returned on_skip's state) or "error"
    closed: bool | None  # a skip's state.closed
    started: float
    took: float


@dataclass
class Ledger:
    """Every task accounted for, exactly once."""

    tasks: int
    closed: int
    handled: int
    skipped_closed: int  # skipped on a confirmed close
    on_error: int  # given the on_error policy ("raise": the error reached the worker)
    lost: int  # no outcome at all
    run_twice: int  # the handler ran more than once
    decided_twice: int  # more than one outcome
    wrong_skips: int  # skipped without a confirmed close of that workid
    missed_closes: int  # the handler ran although the task was closed and looked up fine

    @property
    def clean(self) -> bool:
        return not (self.lost or self.run_twice or self.decided_twice or self.wrong_skips)


def make_tasks(count: int, prefix: str) -> tuple[list[Task], set[str]]:
    """``count`` tasks with their own workids; every third one is closed."""
    tasks = [Task(n, f"{prefix}-{n}") for n in range(count)]
    return tasks, {t.workid for t in tasks if t.n % 3 == 0}


def account(
    tasks: Sequence[Task], closed: set[str], records: Iterable[Record], runs: Iterable[int]
) -> Ledger:
    """Check every task's fate against the service's truth."""
    by_n = {t.n: t for t in tasks}
    outcomes: collections.Counter[int] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    wrong = missed = 0
    for rec in records:
        outcomes[rec.n] += 1
        workid = by_n[rec.n].workid
        if rec.kind == "skipped":
            if rec.closed and workid in closed:
                kinds["skipped_closed"] += 1
            else:
                wrong += 1
        else:
            kinds[rec.kind] += 1
            missed += rec.kind == "handled" and workid in closed
    ran = collections.Counter(runs)
    return Ledger(
        tasks=len(tasks),
        closed=len(closed),
        handled=kinds["handled"],
        skipped_closed=kinds["skipped_closed"],
        on_error=kinds["error"],
        lost=sum(1 for t in tasks if outcomes[t.n] == 0),
        run_twice=sum(1 for c in ran.values() if c > 1),
        decided_twice=sum(1 for c in outcomes.values() if c > 1),
        wrong_skips=wrong,
        missed_closes=missed,
    )


def _skipped_state(state: TaskState) -> TaskState:
    return state


def _record(task: Task, result: object, started: float) -> Record:
    took = time.monotonic() - started
    if isinstance(result, TaskState):
        return Record(task.n, "skipped", result.closed, started, took)
    return Record(task.n, "handled", None, started, took)


# -- 1. Redis killed (or frozen) mid-run --------------------------------------------------


@dataclass
class OutageResult:
    """One run of the Redis outage scenario."""

    fault: str  # "kill" or "freeze"
    driver: str
    ledger: Ledger
    redis_timeout: float
    outage: float  # seconds Redis was away
    checks_during_outage: int
    max_stall_outage: float  # the slowest check that overlapped the outage
    max_stall: float  # the slowest check of the whole run
    refill_expected: int  # closed workids first checked once Redis was back and settled
    refilled: int  # of those, how many Redis holds at the end
    healthy_redis_errors: int  # Redis commands that failed before the fault
    stats: dict[str, int]
    seconds: float


def _outage_settings(
    server: RedisServer, redis_timeout: float, cooldown: float
) -> TaskGuardSettings:
    return TaskGuardSettings(
        redis_url=server.url,
        redis_timeout=redis_timeout,
        redis_breaker_cooldown=cooldown,
        key_prefix=OUTAGE_PREFIX,
        retry_backoff=0.001,
        retry_backoff_max=0.005,
        on_error="raise",
    )


def _prepare_outage(server: RedisServer, tasks: int, tag: str) -> tuple[list[Task], set[str]]:
    server.ensure_ready()
    server.flush()
    work, closed = make_tasks(tasks, tag)
    # Another worker has already cached half of the closed workids.
    client = inspector(server)
    with client.pipeline(transaction=False) as pipe:
        for t in work:
            if t.n % 6 == 0:
                pipe.set(f"{OUTAGE_PREFIX}:task:{t.workid}", "closed", ex=3600)
        pipe.execute()
    client.close()
    return work, closed


def _outage_result(
    fault: str,
    driver: str,
    server: RedisServer,
    work: list[Task],
    closed: set[str],
    records: list[Record],
    runs: list[int],
    window: tuple[float, float, float],
    settings: TaskGuardSettings,
    stats: dict[str, int],
    healthy_errors: int,
) -> OutageResult:
    started, down_at, up_at = window
    during = [r for r in records if r.started <= up_at and r.started + r.took >= down_at]
    # Once Redis is back and its breaker has had a cool-down to probe it, every
    # closed workid looked up must be shared through Redis again.
    settled = _settled(up_at, settings)
    by_n = {t.n: t for t in work}
    later = [
        f"{OUTAGE_PREFIX}:task:{by_n[r.n].workid}"
        for r in records
        if r.started > settled and by_n[r.n].workid in closed
    ]
    client = inspector(server)
    refilled = existing(client, later)
    client.close()
    return OutageResult(
        fault=fault,
        driver=driver,
        ledger=account(work, closed, records, runs),
        redis_timeout=settings.redis_timeout,
        outage=up_at - down_at,
        checks_during_outage=len(during),
        max_stall_outage=max((r.took for r in during), default=0.0),
        max_stall=max((r.took for r in records), default=0.0),
        refill_expected=len(later),
        refilled=refilled,
        healthy_redis_errors=healthy_errors,
        stats=stats,
        seconds=time.monotonic() - started,
    )


def _settled(up_at: float, settings: TaskGuardSettings) -> float:
    """When Redis is surely in use again: its breaker had a cool-down to probe it."""
    return up_at + settings.redis_breaker_cooldown + 2 * settings.redis_timeout + 0.3


def _fault(server: RedisServer, fault: str) -> None:
    if fault == "kill":
        server.stop()
    elif fault == "freeze":
        server.freeze()
    else:
        raise ValueError(f"unknown fault {fault!r}")


def _recover(server: RedisServer, fault: str) -> None:
    if fault == "kill":
        server.start()
    else:
        server.thaw()


def redis_outage_sync(
    server: RedisServer,
    *,
    fault: str = "kill",
    tasks: int = 20_000,
    threads: int = 8,
    outage: float = 2.5,
    redis_timeout: float = 0.2,
    cooldown: float = 0.2,
) -> OutageResult:
    """``threads`` workers push ``tasks`` through ``@guard.skip_if_closed`` while
    Redis is killed (or frozen) a sixth of the way in and brought back after
    ``outage`` seconds, half-way through."""
    work, closed = _prepare_outage(server, tasks, f"s{fault}")
    settings = _outage_settings(server, redis_timeout, cooldown)
    service = FakeTaskStateService(closed=closed)
    records: list[Record] = []
    runs: list[int] = []
    inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()

    with TaskGuard(settings, transport=service) as guard:

        @guard.skip_if_closed(on_skip=_skipped_state)
        def handle(task: Task) -> str:
            runs.append(task.n)
            return HANDLED

        def worker() -> None:
            while (task := inbox.get(timeout=JOIN_TIMEOUT)) is not None:
                started = time.monotonic()
                try:
                    result: object = handle(task)
                except TaskStateUnknown:
                    records.append(Record(task.n, "error", None, started, 0.0))
                    continue
                records.append(_record(task, result, started))

        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        third = tasks // 3
        started = time.monotonic()
        for task in work[:third]:
            inbox.put(task)
        wait_until(lambda: len(records) >= third // 2, JOIN_TIMEOUT, "phase 1")
        healthy_errors = guard.stats()["redis_errors"]
        down_at = time.monotonic()
        _fault(server, fault)
        for task in work[third : 2 * third]:
            inbox.put(task)
        wait_until(
            lambda: len(records) >= third + third // 2 and time.monotonic() - down_at >= outage,
            JOIN_TIMEOUT,
            "the outage phase",
        )
        _recover(server, fault)
        up_at = time.monotonic()
        last = work[2 * third :]
        for task in last[: len(last) // 2]:
            inbox.put(task)
        wait_until(lambda: time.monotonic() > _settled(up_at, settings), JOIN_TIMEOUT, "settling")
        for task in last[len(last) // 2 :]:
            inbox.put(task)
        for _ in pool:
            inbox.put(None)
        for thread in pool:
            thread.join(JOIN_TIMEOUT)
        if any(thread.is_alive() for thread in pool):
            raise TimeoutError("a worker thread is still running: the guard hung it")
        stats = guard.stats()
    return _outage_result(
        fault,
        f"TaskGuard, {threads} threads",
        server,
        work,
        closed,
        records,
        runs,
        (started, down_at, up_at),
        settings,
        stats,
        healthy_errors,
    )


async def redis_outage_async(
    server: RedisServer,
    *,
    fault: str = "kill",
    tasks: int = 6_000,
    concurrency: int = 1_000,
    outage: float = 2.5,
    redis_timeout: float = 0.2,
    cooldown: float = 0.2,
) -> OutageResult:
    """:func:`redis_outage_sync` with an ``AsyncTaskGuard`` and ``concurrency``
    worker coroutines taking tasks from one queue."""
    work, closed = await asyncio.to_thread(_prepare_outage, server, tasks, f"a{fault}")
    settings = _outage_settings(server, redis_timeout, cooldown)
    service = FakeTaskStateService(closed=closed)
    records: list[Record] = []
    runs: list[int] = []
    inbox: asyncio.Queue[Task | None] = asyncio.Queue()

    async with AsyncTaskGuard(settings, transport=service) as guard:

        @guard.skip_if_closed(on_skip=_skipped_state)
        async def handle(task: Task) -> str:
            runs.append(task.n)
            return HANDLED

        async def worker() -> None:
            while (task := await inbox.get()) is not None:
                started = time.monotonic()
                try:
                    result: object = await handle(task)
                except TaskStateUnknown:
                    records.append(Record(task.n, "error", None, started, 0.0))
                    continue
                records.append(_record(task, result, started))

        pool = [asyncio.create_task(worker()) for _ in range(concurrency)]
        third = tasks // 3
        started = time.monotonic()
        for task in work[:third]:
            inbox.put_nowait(task)
        await await_until(lambda: len(records) >= third // 2, JOIN_TIMEOUT, "phase 1")
        healthy_errors = guard.stats()["redis_errors"]
        down_at = time.monotonic()
        await asyncio.to_thread(_fault, server, fault)
        for task in work[third : 2 * third]:
            inbox.put_nowait(task)
        await await_until(
            lambda: len(records) >= third + third // 2 and time.monotonic() - down_at >= outage,
            JOIN_TIMEOUT,
            "the outage phase",
        )
        await asyncio.to_thread(_recover, server, fault)
        up_at = time.monotonic()
        last = work[2 * third :]
        for task in last[: len(last) // 2]:
            inbox.put_nowait(task)
        await await_until(
            lambda: time.monotonic() > _settled(up_at, settings), JOIN_TIMEOUT, "settling"
        )
        for task in last[len(last) // 2 :]:
            inbox.put_nowait(task)
        for _ in pool:
            inbox.put_nowait(None)
        done, pending = await asyncio.wait(pool, timeout=JOIN_TIMEOUT)
        if pending:
            for task_ in pending:
                task_.cancel()
            raise TimeoutError(f"{len(pending)} worker coroutines still running: the guard hung")
        for task_ in done:
            task_.result()
        stats = guard.stats()
    return await asyncio.to_thread(
        _outage_result,
        fault,
        f"AsyncTaskGuard, {concurrency:,} coroutines",
        server,
        work,
        closed,
        records,
        runs,
        (started, down_at, up_at),
        settings,
        stats,
        healthy_errors,
    )
