"""``python -m benchmarks``: start the servers, take every figure, report.

Exit status: 0 when every selected figure was produced and the coalescing
counts (P5) are exact; 1 otherwise. Timing goals never decide the exit status
(a MISS is shown in the table): shared machines are too noisy to gate on time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from benchmarks import bench_http, bench_local, bench_process, bench_redis
from benchmarks.harness import FULL, QUICK, Context, Figure, Pinning
from benchmarks.report import ROOT, collect_metadata, print_table, update_readme, write_json
from benchmarks.servers import RedisProcess, ServiceProcess

__all__ = ["main"]

FigureFn = Callable[[Context], list[Figure]]

# In the order they run: the large Redis write (P6) and the demo (P8) last.
GROUPS: dict[str, list[FigureFn]] = {
    "P1": [bench_local.p1],
    "P2": [bench_redis.p2],
    "P3": [bench_redis.p3],
    "P7": [bench_redis.p7],
    "P4": [bench_http.p4],
    "P5": [bench_http.p5],
    "P6": [bench_process.p6_local, bench_redis.p6_redis],
    "P8": [bench_process.p8],
}
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
README = ROOT / "README.md"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny counts: checks that every figure is produced, nothing more",
    )
    parser.add_argument("--only", default="", metavar="P2,P3", help="run these figures only")
    parser.add_argument(
        "--pin",
        choices=("auto", "on", "off"),
        default="auto",
        help="pin client and servers to one CPU (auto: when taskset exists)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the results here (a full run writes results/latest.json)",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="do not refresh README.md's Performance table"
    )
    args = parser.parse_args(argv)
    wanted = [key.strip().upper() for key in args.only.split(",") if key.strip()]
    unknown = sorted(set(wanted) - set(GROUPS))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    args.selected = [key for key in GROUPS if not wanted or key in wanted]
    return args


def _redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return "unknown"
    return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip() or "unknown")


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C does, so every server is stopped on the way out.
    raise SystemExit(128 + signum)


def _run_group(key: str, fns: list[FigureFn], ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    for fn in fns:
        started = time.perf_counter()
        try:
            got = fn(ctx)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            got = [Figure(key, f"{fn.__name__} failed", "", None, "", note=f"error: {exc}")]
        figures += got
        took = time.perf_counter() - started
        shown = ", ".join(f"{f.value_text()} {f.status}" for f in got)
        print(f"  {key} {fn.__name__}: {shown} ({took:.1f} s)", file=sys.stderr, flush=True)
    return figures


def _problems(figures: list[Figure], selected: list[str]) -> list[str]:
    problems = [f"{f.key} not produced: {f.label} {f.note}" for f in figures if not f.produced]
    problems += [
        f"{f.key} count is not exact: {f.label} = {f.value_text()}"
        for f in figures
        if f.key == "P5" and f.produced and f.status != "OK"
    ]
    got = {f.key for f in figures}
    problems += [f"{key} produced nothing" for key in selected if key not in got]
    return problems


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    scale = QUICK if args.quick else FULL
    # Hermetic: a developer's TASKGUARD_* variables must not reach the guards here.
    for name in [n for n in os.environ if n.startswith("TASKGUARD_")]:
        del os.environ[name]
    signal.signal(signal.SIGTERM, _terminate)
    pin = Pinning.choose(args.pin)
    print(f"benchmarks ({scale.name}): {pin.mode}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    figures: list[Figure] = []
    with contextlib.ExitStack() as stack:
        try:
            redis = stack.enter_context(RedisProcess(pin.cpu))
        except (OSError, RuntimeError) as exc:  # not installed, or it would not start
            print(f"benchmarks: cannot start redis-server: {exc}", file=sys.stderr)
            return 2
        service = stack.enter_context(ServiceProcess(pin.cpu))
        far = None
        if pin.other_cpu is not None and "P4" in args.selected:
            far = stack.enter_context(ServiceProcess(pin.other_cpu)).url
        ctx = Context(scale, pin, redis.port, service.url, far)
        for key in args.selected:
            figures += _run_group(key, GROUPS[key], ctx)
    print(f"\nbenchmarks: {time.perf_counter() - started:.0f} s, {pin.mode}\n")
    print_table(figures)
    meta = collect_metadata(pin, scale, _redis_version())
    complete = not args.quick and args.selected == list(GROUPS)
    if args.json is not None:
        write_json(args.json, meta, figures)
    problems = _problems(figures, args.selected)
    if complete and not problems:
        write_json(RESULTS, meta, figures)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")
        if not args.no_readme:
            if update_readme(README, RESULTS):
                print("refreshed README.md's Performance table")
            else:
                print("README.md has no perf markers: its table was not refreshed", file=sys.stderr)
    elif complete:
        print(f"\nnot writing {RESULTS.relative_to(ROOT)}: the run is incomplete", file=sys.stderr)
    for problem in problems:
        print(f"benchmarks: {problem}", file=sys.stderr)
    return 1 if problems else 0
