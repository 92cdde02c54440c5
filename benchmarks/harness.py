"""Measuring on a shared, noisy 2-core machine: rounds, medians, figures.

Every figure is a ratio against a raw building block measured in the same run,
or a count. The two sides of a ratio are timed in *alternating rounds* (A B,
then B A, ...), each round long enough to amortise the timer, and the figure
is the median of the per-round ratios: a neighbour's burst of load then hits
both sides of a round alike and moves the median little. The garbage
collector is off inside a timed loop, as ``timeit`` does, and collected
between rounds.
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from taskguard import TaskGuardSettings

__all__ = [
    "FULL",
    "QUICK",
    "Context",
    "Figure",
    "Pinning",
    "Scale",
    "format_value",
    "median",
    "per_call",
    "ratios",
    "rounds",
    "settings",
    "us",
]


TIMES = "\u00d7"
SIGNS = {"<=": "\u2264", ">=": "\u2265", "==": "="}


@dataclass(frozen=True)
class Scale:
    """How much work each figure does: full (the real run) or quick (CI smoke)."""

    name: str
    rounds: int  # alternating rounds per ratio
    p1_calls: int  # calls per side per round, local skip path
    p1_peer_calls: int  # Powertools local-cache hits per round
    p2_calls: int  # round trips per side per round
    p2_peer_calls: int  # Powertools Redis hits (3 round trips each) per round
    p3_rounds: int  # check_many(1,000) / MGET rounds (each side repeated p3_reps times)
    p3_reps: int
    p4_calls: int  # sync HTTP lookups per side per round
    p4_async_rounds: int  # rounds of 1,000 concurrent lookups per side
    p5_latency: float  # service latency that makes concurrent checks overlap
    p6_local: int  # closed workids put in the local tier
    p6_redis: int  # closed workids written to Redis
    p7_tasks: int  # tasks through open_only
    p8_tasks: int  # tasks through ``taskguard demo``


FULL = Scale(
    name="full",
    rounds=15,
    p1_calls=200_000,
    p1_peer_calls=20_000,
    p2_calls=20_000,
    p2_peer_calls=2_000,
    p3_rounds=21,
    p3_reps=20,
    p4_calls=2_000,
    p4_async_rounds=11,
    p5_latency=0.2,
    p6_local=100_000,
    p6_redis=1_000_000,
    p7_tasks=100_000,
    p8_tasks=100_000,
)

QUICK = Scale(
    name="quick",
    rounds=2,
    p1_calls=2_000,
    p1_peer_calls=200,
    p2_calls=100,
    p2_peer_calls=50,
    p3_rounds=2,
    p3_reps=1,
    p4_calls=50,
    p4_async_rounds=1,
    p5_latency=0.2,
    p6_local=10_000,
    p6_redis=20_000,
    p7_tasks=6_000,
    p8_tasks=5_000,
)


@dataclass
class Figure:
    """One row of the table: a measured value against its goal.

    ``goal`` is ``(op, threshold)`` with op one of ``<=``, ``>=``, ``==``, or
    None for a figure that is only reported. ``status`` is OK, MISS, INFO, or
    N/A when the figure could not be produced (``note`` says why).
    """

    key: str  # "P2"
    label: str
    unit: str  # "µs", "x" (a ratio), "calls", "MB", "tasks/s"
    goal: tuple[str, float] | None
    mode: str  # how it was taken: pinning, in-process, ...
    value: float | None = None
    note: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def produced(self) -> bool:
        return self.value is not None

    @property
    def status(self) -> str:
        if self.value is None:
            return "N/A"
        if self.goal is None:
            return "INFO"
        op, limit = self.goal
        ok = {
            "<=": self.value <= limit,
            ">=": self.value >= limit,
            "==": self.value == limit,
        }[op]
        return "OK" if ok else "MISS"

    def goal_text(self) -> str:
        if self.goal is None:
            return "reported"
        op, limit = self.goal
        return f"{SIGNS[op]} {format_value(limit, self.unit)}"

    def value_text(self) -> str:
        if self.value is None:
            return "not produced"
        return format_value(self.value, self.unit)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "goal": None if self.goal is None else {"op": self.goal[0], "value": self.goal[1]},
            "status": self.status,
            "mode": self.mode,
            "note": self.note,
            "raw": self.raw,
        }


def format_value(value: float, unit: str) -> str:
    if unit == "x":  # a ratio, shown with the multiplication sign
        return f"{value:.3g}{TIMES}" if value < 10 else f"{value:.1f}{TIMES}"
    if unit == "µs":
        return f"{value:.3g} µs"
    if unit == "calls":
        return f"{value:,.0f} call" + ("" if value == 1 else "s")
    if unit == "tasks/s":
        return f"{value:,.0f} {unit}"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


def us(values: Iterable[float]) -> list[float]:
    """Seconds as microseconds, rounded for the JSON file."""
    return [round(v * 1e6, 4) for v in values]


def settings(**overrides: Any) -> TaskGuardSettings:
    """Guard settings for a benchmark. ``service_url`` is a placeholder that is
    never contacted when a figure hands the guard an in-process transport."""
    overrides.setdefault("service_url", "http://127.0.0.1:9/unused")
    return TaskGuardSettings(**overrides)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def per_call(fn: Callable[[Any], object], items: Iterable[Any], count: int) -> float:
    """Seconds per call of ``fn(item)`` over ``items`` (``count`` of them), GC off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        for item in items:
            fn(item)
        elapsed = time.perf_counter() - started
    finally:
        if enabled:
            gc.enable()
    return elapsed / count


def rounds(sides: dict[str, Callable[[], float]], count: int) -> dict[str, list[float]]:
    """Run each side once per round, rotating which goes first; per-round results.

    A side is a callable that runs one timed batch and returns its figure
    (seconds per call, say). Rotation makes each side go first as often as
    the others, so warm-up and drift do not favour one of them.
    """
    names = list(sides)
    results: dict[str, list[float]] = {name: [] for name in names}
    for i in range(count):
        gc.collect()
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(sides[name]())
    return results


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    """Per-round ratios ``top[i] / bottom[i]``."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


@dataclass(frozen=True)
class Pinning:
    """Where the client and its servers run.

    Pinned: this process (and every thread it starts later), ``redis-server``
    and the HTTP service all run on one CPU, chosen as the last one this
    process may use. Unpinned: the scheduler decides, and round trips may
    cross cores.
    """

    cpu: int | None
    reason: str
    other_cpu: int | None = None  # another CPU this process may use, for cross-core figures

    @property
    def mode(self) -> str:
        if self.cpu is None:
            return f"unpinned ({self.reason}): round trips may cross cores"
        return f"this process, redis-server and the service pinned to CPU {self.cpu} (taskset)"

    @classmethod
    def choose(cls, wanted: str) -> Pinning:
        """``wanted``: ``auto`` (pin when taskset exists), ``on`` or ``off``."""
        if wanted == "off":
            return cls(None, "--pin off")
        if shutil.which("taskset") is None or not hasattr(os, "sched_setaffinity"):
            if wanted == "on":
                raise SystemExit("benchmarks: --pin on needs taskset and sched_setaffinity")
            return cls(None, "taskset not found")
        allowed = os.sched_getaffinity(0)
        cpu = max(allowed)
        others = sorted(allowed - {cpu})
        # Before any thread starts: threads inherit the affinity of their creator.
        os.sched_setaffinity(0, {cpu})
        return cls(cpu, "taskset", others[0] if others else None)


@dataclass(frozen=True)
class Context:
    """What every figure needs: the scale, the pinning, the servers of this run."""

    scale: Scale
    pin: Pinning
    redis_port: int
    service_url: str  # on the client's CPU when pinned
    far_service_url: str | None = None  # on another CPU, when pinned and there is one

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def mode(self, what: str) -> str:
        """The pinning mode of a figure whose client talks to ``what``."""
        if self.pin.cpu is None:
            return f"{self.pin.mode}: {what}"
        return f"one core (CPU {self.pin.cpu}): {what}"
