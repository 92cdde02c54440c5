"""The taskguard command, run as a real process against the reference service over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from taskguard.testing import FakeTaskStateService


@pytest.fixture
def service_url() -> Iterator[str]:
    service = FakeTaskStateService(closed=["C1", "42"])
    with service.serve() as running:
        yield running.url


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "taskguard.cli", *args],
        env={**clean, "TASKGUARD_RETRY_ATTEMPTS": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_prints_a_line_per_workid(service_url: str) -> None:
    done = run("check", "C1", "O1", "42", TASKGUARD_SERVICE_URL=service_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "C1\tclosed\tservice",
        "O1\topen\tservice",
        "42\tclosed\tservice",
    ]


def test_check_json(service_url: str) -> None:
    done = run("check", "C1", "--json", TASKGUARD_SERVICE_URL=service_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workid": "C1", "closed": True, "origin": "service"}


def test_failed_lookup_is_one_line_and_non_zero() -> None:
    done = run("check", "C1", TASKGUARD_SERVICE_URL="http://127.0.0.1:9/nothing-listens")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "C1" in done.stderr


def test_invalid_workid_is_reported_per_workid(service_url: str) -> None:
    done = run("check", "C1", " ", TASKGUARD_SERVICE_URL=service_url)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["C1\tclosed\tservice"]
    assert "blank" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_settings_name_the_variable() -> None:
    done = run("check", "C1", TASKGUARD_SERVICE_URL="http://x", TASKGUARD_CLOSED_TTL="-5")
    assert done.returncode == 2
    assert "TASKGUARD_CLOSED_TTL" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_service_is_one_clear_line() -> None:
    done = run("check", "C1")
    assert done.returncode == 2
    assert "service_url" in done.stderr
    assert "Traceback" not in done.stderr


def test_auth_token_never_printed() -> None:
    done = run(
        "check",
        "C1",
        TASKGUARD_SERVICE_URL="http://127.0.0.1:9/x",
        TASKGUARD_AUTH_TOKEN="tok-very-secret",
    )
    assert "tok-very-secret" not in done.stdout + done.stderr


def test_demo_runs_embedded_and_adds_up() -> None:
    done = run("demo", "--tasks", "2000", "--no-progress")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "processed twice" in out
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines()[1:])
    processed = int(rows["processed"].strip().replace(",", ""))
    skipped = sum(
        int(rows[k].strip().replace(",", ""))
        for k in ("skipped: closed by customer", "skipped: already processed")
    )
    assert processed + skipped == 2000
    assert rows["processed twice"].strip() == "0"
    assert rows["errors"].strip() == "0"


def test_serve_prints_its_url_and_answers_checks() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGUARD_")}
    with subprocess.Popen(
        [sys.executable, "-m", "taskguard.cli", "serve", "--port", "0", "--closed", "7,8"],
        env=clean,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            first = server.stdout.readline()
            url = first.rsplit(" ", 1)[-1].strip()
            assert url.startswith("http://127.0.0.1:")
            done = run("check", "7", "9", TASKGUARD_SERVICE_URL=url)
            assert done.stdout.splitlines() == ["7\tclosed\tservice", "9\topen\tservice"]
        finally:
            server.terminate()
            server.wait(10)


def test_serve_on_a_taken_port_is_one_line() -> None:
    service = FakeTaskStateService()
    with service.serve() as running:
        done = run("serve", "--port", str(running.port))
    assert done.returncode == 2
    assert "cannot serve" in done.stderr
    assert "Traceback" not in done.stderr
