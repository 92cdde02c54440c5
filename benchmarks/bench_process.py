"""P6 (local) and P8: figures taken in a fresh child process.

A child starts from a clean heap: RSS growth measured in the benchmark process
itself would be hidden by memory that earlier figures freed and the allocator
kept. ``taskguard demo`` is run as the command a user types.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import Context, Figure
from benchmarks.servers import pinned_command

__all__ = ["p6_local", "p8"]

_ROOT = Path(__file__).resolve().parent.parent


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=_ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    return done


def p6_local(ctx: Context) -> list[Figure]:
    count = ctx.scale.p6_local
    fig = Figure(
        "P6",
        "local tier: RSS growth per 100,000 closed workids",
        "MB",
        ("<=", 20.0),
        "child process, no Redis (the local tier is the whole cache)",
    )
    done = _run([sys.executable, "-m", "benchmarks.memprobe", str(count)], timeout=300)
    probe = json.loads(done.stdout)
    growth = probe["rss_after"] - probe["rss_before"]
    fig.value = growth * (100_000 / count) / 1e6
    fig.raw = probe
    fig.note = (
        f"{growth / count:.0f} B per workid, the 10-digit workid strings included; "
        f"Python objects alone (tracemalloc): {probe['traced_bytes'] / count:.0f} B"
    )
    return [fig]


def p8(ctx: Context) -> list[Figure]:
    tasks = ctx.scale.p8_tasks
    fig = Figure(
        "P8",
        f"taskguard demo --tasks {tasks:,}, end to end",
        "tasks/s",
        None,
        ctx.mode("child process, embedded service and memory cache"),
    )
    script = shutil.which("taskguard", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "taskguard.cli"]
    command = pinned_command(
        [*command, "demo", "--tasks", str(tasks), "--no-progress"], ctx.pin.cpu
    )
    started = time.perf_counter()
    done = _run(command, timeout=600)
    wall = time.perf_counter() - started
    rate = re.search(r"tasks per second\s+([\d,]+)", done.stdout)
    elapsed = re.search(r"elapsed\s+([\d.]+) s", done.stdout)
    if rate is None or elapsed is None:
        raise RuntimeError(f"P8: no rate in the demo's summary:\n{done.stdout}")
    fig.value = float(rate.group(1).replace(",", ""))
    fig.raw = {
        "command": " ".join(command),
        "tasks": tasks,
        "demo_elapsed_s": float(elapsed.group(1)),
        "wall_s_with_startup": round(wall, 3),
        "summary": done.stdout.strip().splitlines(),
    }
    fig.note = f"the demo's own clock; {tasks / wall:,.0f} tasks/s counting interpreter startup"
    return [fig]
