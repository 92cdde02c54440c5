"""`taskguard demo` pointed at a real Redis and the reference service over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import redis

from taskguard.testing import FakeTaskStateService


def summary(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()[1:]
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines)


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "taskguard.cli", "demo", "--no-progress", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_with_redis_shares_closed_workids(redis_url: str) -> None:
    done = demo("--tasks", "3000", "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    rows = summary(done.stdout)
    assert rows["processed twice"] == "0"
    assert rows["hits: redis"] != "(no redis)"
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter("taskguard:task:*", count=1000))
        # Every closed-by-customer workid and every processed one ends up shared.
        assert len(keys) == 3000 - int(rows["tasks"].split("(")[1].split()[2].replace(",", ""))
        assert {client.get(k) for k in keys[:50]} == {b"closed"}
    finally:
        client.close()


def test_demo_against_a_service_over_http() -> None:
    service = FakeTaskStateService()
    with service.serve() as running:
        done = demo("--tasks", "500", "--service-url", running.url)
    assert done.returncode == 0, done.stderr
    rows = summary(done.stdout)
    assert int(rows["service calls"].replace(",", "")) == service.requests
    assert rows["skipped: closed by customer"] == "0"  # this service closed nothing
