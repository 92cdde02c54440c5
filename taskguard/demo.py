"""``taskguard demo``: a guarded worker over a generated workload.

By default everything is embedded: the reference CheckTaskState service runs
in-process and the cache is in memory, so the demo needs no Redis and no
network. ``--redis-url`` and ``--service-url`` point it at real ones.

The workload looks like a contact-center queue: a share of the tasks were
closed by their customers before a worker got to them, and a share are
redeliveries of tasks already seen. The worker processes each task through
``@guard.skip_if_closed(mark_closed_on_success=True)``, so a redelivered copy of
a finished task is skipped too.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from taskguard.guard import TaskGuard
from taskguard.settings import TaskGuardSettings
from taskguard.state import TaskState

__all__ = ["Workload", "make_workload", "run_demo"]

_CHANNELS = ("email", "chat", "sms", "case", "social")


@dataclass(frozen=True)
class Workload:
    """Generated tasks (in queue order) and the workids customers closed."""

    tasks: list[dict[str, str]]
    closed_by_customers: frozenset[str]
    unique: int


def make_workload(total: int, *, closed_share: float, duplicates: float, seed: int) -> Workload:
    """``total`` tasks: ``duplicates`` of them redeliveries of earlier ones,
    ``closed_share`` of the distinct ones closed by their customers."""
    if not 0 <= closed_share <= 1 or not 0 <= duplicates < 1:
        raise ValueError("--closed-share must be in [0, 1] and --duplicates in [0, 1)")
    rng = random.Random(seed)
    # A fresh prefix per run: a shared Redis must not remember an earlier demo's tasks.
    run = secrets.token_hex(3)
    unique = max(1, round(total * (1 - duplicates)))
    originals = [
        {"workid": f"{run}-{i:08d}", "channel": rng.choice(_CHANNELS)} for i in range(unique)
    ]
    closed = frozenset(t["workid"] for t in rng.sample(originals, round(unique * closed_share)))
    tasks = list(originals)
    for _ in range(total - unique):
        # A redelivery lands after its original, somewhere later in the queue.
        at = rng.randrange(len(tasks))
        original = tasks[rng.randrange(at + 1)]
        tasks.insert(at + 1, dict(original))
    return Workload(tasks, closed, unique)


@dataclass
class _Tally:
    processed: Counter[str] = field(default_factory=Counter)
    skipped_closed: int = 0
    skipped_done: int = 0
    errors: int = 0


class _Progress:
    """A one-line progress bar on a terminal; a line per 10 % otherwise."""

    def __init__(self, total: int, out: TextIO, enabled: bool) -> None:
        self.total, self.out, self.enabled = total, out, enabled
        self.tty = out.isatty()
        self.started = time.perf_counter()
        self.step = max(1, total // (200 if self.tty else 10))

    def update(self, done: int) -> None:
        if not self.enabled or (done % self.step and done != self.total):
            return
        share = done / self.total
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        bar = "#" * int(share * 30)
        line = f"[{bar:<30}] {share:6.1%} {done:,}/{self.total:,} tasks  {rate:,.0f} tasks/s"
        if self.tty:
            self.out.write("\r" + line + ("\n" if done == self.total else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo from parsed arguments; print the summary; return 0 if it added up."""
    workload = make_workload(
        args.tasks, closed_share=args.closed_share, duplicates=args.duplicates, seed=args.seed
    )
    # Without Redis the in-process tier is the whole cache: size it to the workload,
    # or finished tasks fall out of it and their redeliveries run again.
    overrides: dict[str, Any] = {
        "on_error": "raise",
        "local_cache_size": max(10_000, len(workload.tasks)),
    }
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    transport = None
    if args.service_url:
        overrides["service_url"] = args.service_url
    else:
        from taskguard.testing import FakeTaskStateService

        transport = FakeTaskStateService(closed=workload.closed_by_customers)
    settings = TaskGuardSettings(**overrides)
    tally = _Tally()
    progress = _Progress(len(workload.tasks), sys.stderr, enabled=not args.no_progress)

    with TaskGuard(settings, transport=transport) as guard:

        def skipped(state: TaskState) -> None:
            if state.workid in tally.processed:
                tally.skipped_done += 1
            else:
                tally.skipped_closed += 1

        @guard.skip_if_closed(on_skip=skipped, mark_closed_on_success=True)
        def handle(task: dict[str, str]) -> None:
            tally.processed[task["workid"]] += 1  # the real work would happen here

        started = time.perf_counter()
        for done, task in enumerate(workload.tasks, 1):
            try:
                handle(task)
            except Exception as exc:
                tally.errors += 1
                if tally.errors == 1:
                    print(f"taskguard demo: first error: {exc}", file=sys.stderr)
            progress.update(done)
        elapsed = time.perf_counter() - started
        stats = guard.stats()
    return _summary(workload, tally, stats, elapsed, settings)


def _summary(
    workload: Workload,
    tally: _Tally,
    stats: dict[str, int],
    elapsed: float,
    settings: TaskGuardSettings,
) -> int:
    total = len(workload.tasks)
    processed = sum(tally.processed.values())
    run_twice = sum(1 for n in tally.processed.values() if n > 1)
    accounted = processed + tally.skipped_closed + tally.skipped_done + tally.errors
    rows = [
        (
            "tasks",
            f"{total:,} ({workload.unique:,} distinct, {total - workload.unique:,} redelivered)",
        ),
        ("closed by customers", f"{len(workload.closed_by_customers):,} distinct workids"),
        ("processed", f"{processed:,}"),
        ("skipped: closed by customer", f"{tally.skipped_closed:,}"),
        ("skipped: already processed", f"{tally.skipped_done:,}"),
        ("errors", f"{tally.errors:,}"),
        ("processed twice", f"{run_twice:,}"),
        ("service calls", f"{stats['service_calls']:,}"),
        ("hits: in-process", f"{stats['local_hits']:,}"),
        ("hits: redis", f"{stats['redis_hits']:,}" if settings.redis_url else "(no redis)"),
        ("elapsed", f"{elapsed:.2f} s"),
        ("tasks per second", f"{total / max(elapsed, 1e-9):,.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print("taskguard demo summary")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    ok = accounted == total and run_twice == 0
    if not ok:
        print(f"  MISMATCH: {accounted:,} of {total:,} tasks accounted for", file=sys.stderr)
    return 0 if ok else 1
