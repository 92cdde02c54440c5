"""Child process for P6 (local): memory held by N closed workids in the local tier.

``python -m benchmarks.memprobe N`` prints one JSON object: the RSS before and
after N ``mark_closed`` calls on a guard without Redis (so the local tier is
the whole cache and keeps every entry), then, on a second guard, the bytes
Python allocated for the same N entries as tracemalloc counts them (tracemalloc
is off during the RSS pass: its own bookkeeping would inflate RSS).

The workid strings are made inside the measured region: the cache is what
keeps them alive once the caller's task is gone, so they are part of its cost.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tracemalloc

from taskguard import TaskGuard, TaskGuardSettings
from taskguard.testing import FakeTaskStateService

_BASE = 1_000_000_000  # 10-digit workids, like the seed's numeric ones


def rss_bytes() -> int:
    """Resident set size from /proc (Linux); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _guard(count: int) -> TaskGuard:
    settings = TaskGuardSettings(service_url="http://127.0.0.1:9/unused", local_cache_size=count)
    return TaskGuard(settings, transport=FakeTaskStateService())


def _fill(guard: TaskGuard, count: int) -> None:
    for i in range(count):
        guard.mark_closed(str(_BASE + i))


def _warm(guard: TaskGuard) -> None:
    """First use (lazy imports, caches) happens outside the measurement."""
    for i in range(10):
        guard.mark_closed(f"warm-{i}")
        guard.forget(f"warm-{i}")


def main(count: int) -> dict[str, int]:
    guard = _guard(count)
    _warm(guard)
    gc.collect()
    before = rss_bytes()
    _fill(guard, count)
    gc.collect()
    after = rss_bytes()
    kept = all(guard.check(str(_BASE + i)).origin == "local" for i in (0, count // 2, count - 1))
    if not kept:
        raise SystemExit("memprobe: the local tier did not keep every workid")
    guard.close()

    other = _guard(count)
    _warm(other)
    gc.collect()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    _fill(other, count)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    return {
        "workids": count,
        "rss_before": before,
        "rss_after": after,
        "traced_bytes": traced,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
