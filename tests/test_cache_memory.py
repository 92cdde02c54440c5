"""LocalCache: the in-process tier (LRU order, TTLs, size 0, thread safety)."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from taskguard.cache.memory import LocalCache
from taskguard.state import Origin, TaskState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_hit_is_a_local_state(clock: FakeClock) -> None:
    cache = LocalCache(10, clock=clock)
    cache.put("w1", True, 60)
    cache.put("w2", False, 60)

    assert cache.get("w1") == TaskState("w1", True, Origin.LOCAL)
    assert cache.get("w2") == TaskState("w2", False, Origin.LOCAL)
    assert type(cache.get("w1")) is TaskState
    assert cache.get("other") is None


def test_least_recently_used_entry_is_evicted_first(clock: FakeClock) -> None:
    cache = LocalCache(3, clock=clock)
    for workid in ("a", "b", "c"):
        cache.put(workid, True, 60)
    assert cache.get("a") is not None  # a is now the most recently used

    cache.put("d", True, 60)

    assert cache.get("b") is None
    assert [w for w in "acd" if cache.get(w) is not None] == ["a", "c", "d"]
    assert len(cache) == 3


def test_put_again_refreshes_position_and_value(clock: FakeClock) -> None:
    cache = LocalCache(3, clock=clock)
    for workid in ("a", "b", "c"):
        cache.put(workid, False, 60)
    cache.put("a", True, 60)

    cache.put("d", True, 60)

    assert cache.get("b") is None
    assert cache.get("a") == TaskState("a", True, Origin.LOCAL)


def test_entry_expires_after_its_ttl(clock: FakeClock) -> None:
    cache = LocalCache(10, clock=clock)
    cache.put("short", True, 5)
    cache.put("long", True, 50)

    clock.now += 4.999
    assert cache.get("short") is not None
    clock.now += 0.001
    assert cache.get("short") is None
    assert len(cache) == 1  # the expired entry was dropped, not kept as garbage
    assert cache.get("long") is not None


def test_expired_entry_does_not_come_back_when_put_again(clock: FakeClock) -> None:
    cache = LocalCache(10, clock=clock)
    cache.put("w", True, 1)
    clock.now += 2
    cache.put("w", False, 1)

    assert cache.get("w") == TaskState("w", False, Origin.LOCAL)


def test_size_zero_turns_the_tier_off(clock: FakeClock) -> None:
    cache = LocalCache(0, clock=clock)
    cache.put("w", True, 60)

    assert cache.get("w") is None
    assert len(cache) == 0
    assert cache.maxsize == 0


def test_negative_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        LocalCache(-1)


@pytest.mark.parametrize("ttl", [0, -1.0])
def test_put_without_a_positive_ttl_drops_the_entry(clock: FakeClock, ttl: float) -> None:
    cache = LocalCache(10, clock=clock)
    cache.put("w", True, 60)

    cache.put("w", False, ttl)

    assert cache.get("w") is None
    assert len(cache) == 0


def test_delete_and_clear(clock: FakeClock) -> None:
    cache = LocalCache(10, clock=clock)
    for workid in ("a", "b", "c"):
        cache.put(workid, True, 60)

    cache.delete("a")
    cache.delete("missing")  # no error
    assert cache.get("a") is None
    assert len(cache) == 2

    cache.clear()
    assert len(cache) == 0
    assert cache.get("b") is None


def test_eviction_between_read_and_refresh_is_still_a_hit() -> None:
    # The clock runs between the lock-free read and the LRU refresh: evict the
    # entry right there, as another thread could.
    cache: LocalCache

    def evicting_clock() -> float:
        cache.delete("w")
        return 0.0

    cache = LocalCache(10, clock=evicting_clock)
    cache.put("w", True, 60)  # the clock deletes nothing yet: "w" is not there

    assert cache.get("w") == TaskState("w", True, Origin.LOCAL)
    assert len(cache) == 0


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    # Switch threads every microsecond so the races get a chance to happen.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_thread_switches")
def test_many_threads_reading_writing_and_evicting() -> None:
    maxsize, keys, threads, rounds = 4, 10, 16, 10_000
    # A clock written in Python lets the interpreter switch threads between the
    # lock-free read and the LRU refresh; a small cache makes evictions constant.
    cache = LocalCache(maxsize, clock=lambda: time.monotonic())
    errors: list[BaseException] = []
    wrong: list[TaskState] = []
    start = threading.Barrier(threads)

    def closed_of(workid: str) -> bool:
        return int(workid) % 2 == 0  # a fixed answer per workid, to check what comes back

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(rounds):
                workid = str(rng.randrange(keys))
                action = rng.random()
                if action < 0.6:
                    state = cache.get(workid)
                    if state is not None and state != (workid, closed_of(workid), Origin.LOCAL):
                        wrong.append(state)
                elif action < 0.95:
                    cache.put(workid, closed_of(workid), rng.choice((1e-4, 60.0)))
                elif action < 0.99:
                    cache.delete(workid)
                else:
                    cache.clear()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert errors == []
    assert wrong == []
    assert len(cache) <= maxsize


def test_an_entry_is_small() -> None:
    # A worker keeps one entry per closed task it saw: the value is one float
    # (sign: the answer, magnitude: the expiry), nothing per entry besides.
    import sys

    cache = LocalCache(10)
    cache.put("w1", True, 60)
    cache.put("w2", False, 60)
    values = list(cache._data.values())
    assert all(type(v) is float for v in values)
    assert sum(sys.getsizeof(v) for v in values) == 2 * sys.getsizeof(1.0)
