"""Counters and circuit breakers: small pure pieces the guard's drivers share.

Neither does I/O. Both are safe to share between threads: counters are
``itertools.count`` objects (``next()`` is atomic in CPython), and a breaker's
state changes under a lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["STAT_NAMES", "Breaker", "Stats"]

STAT_NAMES = (
    "checks",  # workids asked about (check, is_closed, check_many, the faces)
    "local_hits",  # answered by the in-process tier
    "redis_hits",  # answered by Redis
    "redis_errors",  # Redis commands that failed or timed out
    "redis_skipped",  # Redis commands not sent because its breaker was open
    "lookups",  # service lookups started (each may make several attempts)
    "service_calls",  # requests sent to the CheckTaskState service (attempts)
    "coalesced",  # checks that waited for another check's lookup of the same workid
    "retries",  # attempts after the first
    "errors",  # lookups that ended without an answer
    "breaker_rejections",  # lookups refused at once because the service breaker was open
    "skips",  # handler runs skipped by a face (closed, or on_error="skip")
    "processed",  # handler runs let through by a face
)


class Stats:
    """Thread-safe counters, one per name in ``STAT_NAMES``.

    Single increments (the hot path) are ``next(stats.<name>)`` on an
    ``itertools.count``: atomic, no lock. Batches add their size once, under a lock.
    """

    __slots__ = (*STAT_NAMES, "_bulk", "_lock")

    checks: itertools.count[int]
    local_hits: itertools.count[int]
    redis_hits: itertools.count[int]
    redis_errors: itertools.count[int]
    redis_skipped: itertools.count[int]
    lookups: itertools.count[int]
    service_calls: itertools.count[int]
    coalesced: itertools.count[int]
    retries: itertools.count[int]
    errors: itertools.count[int]
    breaker_rejections: itertools.count[int]
    skips: itertools.count[int]
    processed: itertools.count[int]

    def __init__(self) -> None:
        for name in STAT_NAMES:
            setattr(self, name, itertools.count())
        self._bulk = dict.fromkeys(STAT_NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int) -> None:
        """Add ``amount`` to a counter (a batch counts its items in one call)."""
        if amount:
            with self._lock:
                self._bulk[name] += amount

    def snapshot(self) -> dict[str, int]:
        """The current value of every counter."""
        with self._lock:
            return {name: _peek(getattr(self, name)) + self._bulk[name] for name in STAT_NAMES}


def _peek(counter: itertools.count[int]) -> int:
    # repr is "count(N)": the only way to read a count without advancing it.
    return int(repr(counter)[6:-1])


class Breaker:
    """A circuit breaker over *failures in a row*.

    Closed: every call is allowed. After ``threshold`` failures in a row it opens:
    :meth:`allow` says no for ``cooldown`` seconds. Then it lets exactly one probe
    through (half-open); the probe's success closes it, its failure opens it again.
    A ``threshold`` of 0 turns the breaker off (always allows).
    """

    __slots__ = ("_clock", "_lock", "_open_until", "_probing", "cooldown", "failures", "threshold")

    failures: int
    """Failures in a row so far (read-only for callers); 0: healthy, and a
    success has nothing to record."""

    def __init__(
        self,
        *,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while calls are being refused (the cool-down, or a probe in flight)."""
        return self.failures >= self.threshold > 0 and (
            self._probing or self._clock() < self._open_until
        )

    def allow(self) -> bool:
        """May a call go through now? Cheap when closed (no lock, no clock)."""
        if self.failures < self.threshold or self.threshold == 0:
            return True
        with self._lock:
            if self.failures < self.threshold:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True  # half-open: this caller is the one probe
            return True

    def success(self) -> None:
        """A call went through: close the breaker."""
        if self.failures or self._probing:
            with self._lock:
                self.failures = 0
                self._probing = False

    def failure(self) -> bool:
        """A call failed. Returns True when this failure opened the breaker."""
        if self.threshold == 0:
            return False
        with self._lock:
            was_open = self.failures >= self.threshold
            self.failures += 1
            self._probing = False
            if self.failures >= self.threshold:
                self._open_until = self._clock() + self.cooldown
                return not was_open
            return False

    def release_probe(self) -> None:
        """The probe ended with neither success nor failure (cancelled, say)."""
        with self._lock:
            self._probing = False
