"""Run the reliability scenarios and write their figures into README.md.

    python tests/reliability/report.py             # run, print, update README.md
    python tests/reliability/report.py --dry-run   # run and print only

It runs the same scenario drivers as the tests in this folder (a real
``redis-server`` of its own on a free loopback port, the reference service
in-process and over loopback HTTP) and replaces only what lies between
``<!-- reliability:begin -->`` and ``<!-- reliability:end -->`` in README.md.
Takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
README = TESTS.parent / "README.md"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.redis_server import RedisServer  # noqa: E402

from reliability import (  # noqa: E402
    contention,
    faults,
    fleet,
    hardening,
    hostile,
    redis_access,
    scenarios,
    wire,
)
from taskguard import (  # noqa: E402
    AsyncTaskGuard,
    ProtocolError,
    TaskGuard,
    TaskGuardError,
    TaskGuardSettings,
)

BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
Row = tuple[str, str, str]
NOTES: list[str] = []  # what did not hold, said under the table


def n(value: float) -> str:
    return f"{value:,}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def outage_rows(server: RedisServer) -> list[Row]:
    rows: list[Row] = []
    runs = [
        ("killed (SIGKILL)", "kill", lambda f: scenarios.redis_outage_sync(server, fault=f)),
        ("frozen (SIGSTOP)", "freeze", lambda f: scenarios.redis_outage_sync(server, fault=f)),
        (
            "killed (SIGKILL)",
            "kill",
            lambda f: asyncio.run(scenarios.redis_outage_async(server, fault=f)),
        ),
        (
            "frozen (SIGSTOP)",
            "freeze",
            lambda f: asyncio.run(scenarios.redis_outage_async(server, fault=f)),
        ),
    ]
    for how, fault, run in runs:
        r = run(fault)
        led = r.ledger
        healthy = ""
        if r.healthy_redis_errors:
            healthy = (
                f"; before the fault, {n(r.healthy_redis_errors)} Redis commands already "
                "failed (see below)"
            )
            note = (
                "Redis under 1,000 coroutines: with `redis_timeout` 0.2 s, an `AsyncTaskGuard` "
                "running 1,000 checks at once on one event loop sees some Redis commands take "
                "longer than that even while Redis is healthy (waiting for a pooled "
                "connection, redis-py's `No connection available`, or for the busy loop to "
                "read the reply; a larger pool did not help). Each such miss is counted, "
                "logged, and opens the Redis breaker for `redis_breaker_cooldown`: checks then "
                "ask the service directly, and answers found meanwhile are not shared through "
                "Redis. Nothing is lost; keep `redis_timeout` above the event loop's own "
                "queueing delay at your concurrency."
            )
            if note not in NOTES:
                NOTES.append(note)
        rows.append(
            (
                f"Redis {how} mid-run — {r.driver}",
                f"{n(led.tasks)} tasks ({n(led.closed)} closed) through `@skip_if_closed`; Redis "
                f"away {r.outage:.1f} s, {n(r.checks_during_outage)} checks meanwhile",
                f"lost **{led.lost}**, run twice **{led.run_twice}**, skipped without a confirmed "
                f"close **{led.wrong_skips}**, on_error needed {led.on_error}; handled "
                f"{n(led.handled)}, skipped {n(led.skipped_closed)}; slowest check during the "
                f"outage **{ms(r.max_stall_outage)}** (redis_timeout {ms(r.redis_timeout)}); "
                f"closed workids cached in Redis again afterwards: {n(r.refilled)}/"
                f"{n(r.refill_expected)}{healthy}",
            )
        )
    return rows


def service_rows() -> list[Row]:
    rows: list[Row] = []
    for r in (faults.flaky_service_sync(), asyncio.run(faults.flaky_service_async())):
        rows.append(
            (
                f"Flaky service over HTTP — {r.driver}",
                f"{n(r.checks)} checks; the service failed {r.share('503'):.0%} of "
                f"{n(r.requests)} requests with 503 and held {r.share('timeout'):.0%} past "
                "request_timeout",
                f"answered right **{r.answered}/{r.checks}**, failed {sum(r.failed.values())}; "
                f"slowest check {r.slowest:.2f} s (retry_deadline {r.deadline:g} s)",
            )
        )
    for fault, label in (("503", "answers 503"), ("timeout", "never answers")):
        d = faults.dead_service(fault)
        rows.append(
            (
                f"Dead service: every request {label}",
                f"{d.checks} checks from 8 threads, retry_deadline {d.deadline:g} s, "
                "50 attempts allowed",
                f"`LookupFailed` **{d.lookup_failed}/{d.checks}**; slowest check {d.slowest:.2f} s",
            )
        )
    return rows


def breaker_rows() -> list[Row]:
    rows: list[Row] = []
    for b in (fleet.breaker_fleet_sync(), asyncio.run(fleet.breaker_fleet_async())):
        rows.append(
            (
                f"Service breaker, dead connector — {b.driver}",
                f"{b.threshold} failed lookups ({b.attempts_to_open} attempts) open it; the fleet "
                f"asks {n(b.fleet_checks)} times through every face during the {b.cooldown:g} s "
                f"cool-down, then {b.probe_total} at once",
                f"requests during the cool-down **{b.requests_during_cooldown}**; refusals took "
                f"{b.median_rejection * 1e6:,.0f} µs (median), {ms(b.slowest_rejection)} at most; "
                f"requests let through after it **{b.probe_requests}** "
                f"(the probe); answers again once it succeeds",
            )
        )
    f = fleet.flaky_never_trips()
    rows.append(
        (
            "Service breaker vs a 30%-503 service",
            f"{n(f.lookups)} lookups, {n(f.requests)} requests; up to "
            f"{f.longest_failed_attempt_run} failed attempts in a row (threshold {f.threshold})",
            f"breaker refusals **{f.breaker_rejections}** (it counts failed lookups: "
            f"{f.failed_lookups} failed, never {f.threshold} in a row)",
        )
    )
    return rows


def concurrency_rows(server: RedisServer) -> list[Row]:
    rows: list[Row] = []
    for url in (None, server.url):
        server.flush()
        for c in (
            contention.concurrency_sync(redis_url=url),
            asyncio.run(contention.concurrency_async(redis_url=url)),
        ):
            held = sum(c.invariants.values())
            rows.append(
                (
                    f"Concurrency — {c.driver}",
                    f"{n(c.calls)} calls (check, is_closed, check_many, decorator, task()) over "
                    f"{c.workids} closed workids, service latency 2-5 ms",
                    f"service calls per workid **{c.requests_per_workid[0]}-"
                    f"{c.requests_per_workid[1]}**; {n(c.stats['coalesced'])} checks joined "
                    f"another's lookup; `stats()` invariants {held}/{len(c.invariants)}; "
                    f"deadlocks 0 ({c.seconds:.2f} s)",
                )
            )
    return rows


def fuzz_row() -> Row:
    tallies = [
        wire.fuzz_wire("envelopes", examples=1500),
        wire.fuzz_wire("anything", examples=500),
        wire.fuzz_wire_async("envelopes", examples=400),
    ]
    total = sum(t.examples for t in tallies)
    closed = sum(t.closed for t in tallies)
    opened = sum(t.open for t in tallies)
    refused = sum(sum(t.refused.values()) for t in tallies)
    return (
        "Fuzzed answers (hypothesis, fixed seed)",
        f"{n(total)} bodies through TaskGuard and AsyncTaskGuard: envelopes with every field "
        "right, near, mistyped, random or missing; data/message both or neither; wrong "
        "workid; invalid UTF-8; over max_response_bytes; nesting 5,000 deep; random JSON, "
        "text, bytes",
        f"unhandled exceptions **0**, answers differing from the rules **0**, cached when "
        f"not a confirmed close **0**; {n(closed)} closed, {n(opened)} open, {n(refused)} "
        "refused (`ProtocolError`/`ServiceError`)",
    )


def bad_input_row(server: RedisServer) -> Row:
    s = hardening.bad_input_sweep(server)
    return (
        "Bad input",
        f"{len(s.values)} invalid workids (None, empty, blank, 257 chars, control "
        f"characters, a lone surrogate, bools, other types) x {len(s.entry_points)} entry "
        f"points, sync and async = {n(s.tried)} calls",
        f"`InvalidWorkId` **{n(s.refused)}/{n(s.tried)}**; service requests "
        f"**{s.requests}**, Redis commands **{sum(s.redis_commands.values())}**, counters "
        f"moved {len(s.stats_moved)}",
    )


def security_rows(server: RedisServer) -> list[Row]:
    hunt = hardening.leak_hunt()
    keys = redis_access.key_confinement(server, examples=500)
    rows: list[Row] = [
        (
            "Secrets",
            f"auth token, a wrong token, a password in service_url and in redis_url; "
            f"{n(hunt.total)} texts: every log record at DEBUG, reprs, "
            f"{n(sum(hunt.errors_seen.values()))} errors with their chained causes, CLI output",
            f"secrets found **{len(hunt.leaks)}**",
        ),
        (
            "Redis keys",
            f"{keys.examples} hypothesis workids (glob characters, `:task:`, `../`, any "
            f"unicode, ints), cached through both write paths, read back by another guard",
            f"keys outside `tgsec:task:` **{len(keys.outside)}**, unexpected keys "
            f"{len(keys.strangers)} ({len(keys.keys)} keys for {len(keys.written)} valid "
            f"workids; {keys.refused} invalid ones refused); commands sent: "
            f"{', '.join(sorted(c for c in keys.commands if c in ('get', 'mget', 'set', 'del')))}",
        ),
    ]
    rows += tls_acl_rows(server.executable)
    rows += oversize_rows()
    return rows


def tls_acl_rows(executable: str) -> list[Row]:
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            files = hostile.make_tls_files(Path(directory))
            tls = hostile.RedisProcess(executable, tls=files)
            try:
                with tls.admin() as admin:
                    good = redis_access.redis_round_trip(
                        "tls",
                        tls.url(query=f"?ssl_ca_certs={files.ca}"),
                        admin,
                        prefix="tls",
                        workid="t-1",
                    )
                    bad = redis_access.redis_round_trip(
                        "tls-unverified", tls.url(), admin, prefix="tlsv", workid="t-2"
                    )
            finally:
                tls.close()
        rows.append(
            (
                "`rediss://` with a self-signed CA",
                "redis-server --tls-port; a guard writes, another reads (sync and async), with "
                "`?ssl_ca_certs=ca.pem` and without it",
                f"with the CA: read back from {good.second}/{good.async_second}, Redis errors "
                f"{good.redis_errors}; without: certificate refused, answered by the "
                f"{bad.second}, nothing written",
            )
        )
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        rows.append(("`rediss://`", "not run", f"{type(exc).__name__}: {exc}"))
    acl = hostile.RedisProcess(executable)
    try:
        with acl.admin() as admin:
            redis_access.acl_setup(admin, prefix="tgacl")
            user, password = redis_access.ACL_USER, redis_access.ACL_PASSWORD
            good = redis_access.redis_round_trip(
                "acl", acl.url(user=user, password=password), admin, prefix="tgacl", workid="a"
            )
            wrong = redis_access.redis_round_trip(
                "acl", acl.url(user=user, password="x"), admin, prefix="tgacl", workid="b"
            )
    finally:
        acl.close()
    rows.append(
        (
            "ACL user `redis://user:pass@`",
            "a user allowed only GET, MGET, SET, DEL on `~tgacl:task:*`; then a wrong password",
            f"works: read back from {good.second}, Redis errors {good.redis_errors}; wrong "
            f"password: answered by the {wrong.second}, no exception",
        )
    )
    return rows


def _timed(call: Callable[[], object]) -> tuple[BaseException | None, float, int]:
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        call()
    except TaskGuardError as exc:
        error = exc
    took = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, took, peak


def oversize_rows() -> list[Row]:
    worst_took = worst_peak = 0.0
    refused = tried = 0
    for mode in ("endless-chunked", "endless-raw", "huge-length"):
        with hostile.HostileHttpServer(mode) as server:
            settings = TaskGuardSettings(service_url=server.url, retry_attempts=3)
            with TaskGuard(settings) as guard:
                for i in range(5):
                    error, took, peak = _timed(lambda i=i: guard.check(f"e-{i}"))  # type: ignore[misc]
                    tried += 1
                    refused += isinstance(error, ProtocolError)
                    worst_took, worst_peak = max(worst_took, took), max(worst_peak, peak)

            async def many(s: TaskGuardSettings = settings) -> list[tuple[bool, float, int]]:
                out = []
                async with AsyncTaskGuard(s) as aguard:
                    for i in range(5):
                        tracemalloc.start()
                        started = time.monotonic()
                        try:
                            await aguard.check(f"a-{i}")
                            ok = False
                        except ProtocolError:
                            ok = True
                        out.append(
                            (ok, time.monotonic() - started, tracemalloc.get_traced_memory()[1])
                        )
                        tracemalloc.stop()
                return out

            for ok, took, peak in asyncio.run(many()):
                tried += 1
                refused += ok
                worst_took, worst_peak = max(worst_took, took), max(worst_peak, peak)
    rows: list[Row] = [
        (
            "Answers over max_response_bytes (64 KiB)",
            "endless chunked body, endless body without a length, Content-Length 10^12; sync and "
            "async, 5 checks each",
            f"`ProtocolError` **{refused}/{tried}**, not retried; slowest {ms(worst_took)}; peak "
            f"memory during a check {worst_peak / 1024:,.0f} KiB",
        )
    ]
    rows += drip_rows()
    return rows


def drip_rows() -> list[Row]:
    settings_kw = {
        "request_timeout": 0.3,
        "retry_attempts": 2,
        "retry_deadline": 1.0,
        "retry_backoff": 0.001,
        "retry_backoff_max": 0.002,
    }
    with hostile.HostileHttpServer("drip", drip=0.05) as server:
        settings = TaskGuardSettings(service_url=server.url, **settings_kw)

        async def one() -> float:
            async with AsyncTaskGuard(settings) as guard:
                started = time.monotonic()
                with contextlib.suppress(TaskGuardError):
                    await asyncio.wait_for(guard.check("d"), 10)
                return time.monotonic() - started

        async_took = asyncio.run(one())
        sync_guard = TaskGuard(settings)
        done = threading.Event()

        def blocking() -> None:
            with contextlib.suppress(TaskGuardError):
                sync_guard.check("d")
            done.set()

        started = time.monotonic()
        threading.Thread(target=blocking, daemon=True).start()
        ended = done.wait(3.0)
        sync_took = time.monotonic() - started
    sync_guard.close()
    sync = f"`LookupFailed` after {sync_took:.2f} s"
    if not ended:
        sync = "not bounded: still reading after 3 s"
        NOTES.append(
            "Gap: a blocking `TaskGuard` check was still reading a trickling answer after 3 s."
        )
    return [
        (
            "Answer trickling 1 byte / 50 ms",
            "headers at once, then the body a byte at a time; request_timeout 0.3 s, "
            "retry_deadline 1 s",
            f"AsyncTaskGuard: `LookupFailed` after {async_took:.2f} s; TaskGuard (urllib3): {sync}",
        )
    ]


def table(rows: list[Row]) -> str:
    lines = ["| scenario | what was tried | what held |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def redis_version(executable: str) -> str:
    out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"v=(\S+)", out.stdout)
    return match.group(1) if match else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print only; leave README.md")
    args = parser.parse_args(argv)
    executable = shutil.which("redis-server")
    if executable is None:
        print("report: redis-server is not on PATH", file=sys.stderr)
        return 2
    started = time.monotonic()
    server = RedisServer(executable)
    try:
        rows = outage_rows(server)
        rows += service_rows()
        rows += breaker_rows()
        rows += concurrency_rows(server)
        rows.append(fuzz_row())
        rows.append(bad_input_row(server))
        rows += security_rows(server)
    finally:
        server.close()
    took = time.monotonic() - started
    body = "\n".join(
        [
            f"Produced by `python tests/reliability/report.py` on {datetime.date.today()} "
            f"(Python {platform.python_version()}, redis-server {redis_version(executable)}, "
            f"{platform.machine()}, loopback only; {took:.0f} s). The same scenario drivers run "
            "in CI as `tests/reliability/`, which assert every bold figure (timings as upper "
            "bounds).",
            "",
            table(rows),
            *(f"\n{note}" for note in NOTES),
        ]
    )
    print(body)
    if not args.dry_run:
        text = README.read_text()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
        if not pattern.search(text):
            print(f"report: {README} has no {BEGIN} ... {END} block", file=sys.stderr)
            return 1
        README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{body}\n{END}", text, count=1))
        print(f"\nreport: updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
