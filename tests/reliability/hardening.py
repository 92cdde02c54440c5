"""Drivers for bad input and secrets: what is refused, and what never leaks.

* :func:`bad_input_sweep`: every invalid workid class of DESIGN section 2 through
  every public entry point, sync and async, against a real service and a real
  Redis; each must raise ``InvalidWorkId`` and touch nothing.
* :func:`leak_hunt`: every path that writes text (logs at DEBUG, reprs,
  exceptions with their chained causes, the CLI) exercised with an auth token
  and a Redis password; neither may appear anywhere.

Redis keys, TLS and ACL users are in :mod:`reliability.redis_access`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from support.redis_server import RedisServer

import taskguard
from taskguard import (
    AsyncTaskGuard,
    InvalidWorkId,
    TaskGuard,
    TaskGuardError,
    TaskGuardSettings,
)
from taskguard.testing import FakeTaskStateService
from taskguard.transport.async_http import AiohttpTransport
from taskguard.transport.http import UrllibTransport


class _NoWorkid:
    """A task object without a ``workid`` attribute."""


INVALID_WORKIDS: dict[str, object] = {
    "None": None,
    "empty": "",
    "blank": "   ",
    "whitespace only": "\t\n",
    "257 characters": "w" * 257,
    "NUL inside": "ab\x00c",
    "newline inside": "ab\ncd",
    "escape sequence": "\x1b[31mred",
    "DEL": "x\x7f",
    "C1 control": "a\x85b",
    "lone surrogate": "a\ud800b",
    "bool True": True,
    "bool False": False,
    "int over 256 digits": 10**300,
    "float": 1.5,
    "bytes": b"12345",
    "list": ["12345"],
    "object without workid": _NoWorkid(),
}

# For the faces that find the workid in a task: these tasks carry an invalid one.
INVALID_TASKS: dict[str, object] = {
    "mapping without workid": {"id": "12345"},
    "mapping with workid None": {"workid": None},
    "object with a blank workid": type("T", (), {"workid": " "})(),
}
BAD_VALUES = {**INVALID_WORKIDS, **INVALID_TASKS}


@dataclass
class Sweep:
    """What the bad-input sweep tried and what it saw."""

    tried: int = 0
    refused: int = 0  # raised InvalidWorkId (a ValueError and a TaskGuardError)
    failures: list[str] = field(default_factory=list)
    entry_points: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    requests: int = 0  # the service's request count at the end: must be 0
    redis_commands: dict[str, int] = field(default_factory=dict)  # must be empty
    stats_moved: dict[str, int] = field(default_factory=dict)  # must be empty


def _sync_entry_points(guard: TaskGuard) -> dict[str, Callable[[object], object]]:
    ran: list[object] = []

    @guard.skip_if_closed
    def bare(task: object) -> None:
        ran.append(task)

    @guard.skip_if_closed(workid="task_id", on_error="process")
    def by_name(payload: str, task_id: object) -> None:
        ran.append(task_id)

    @guard.skip_if_closed(workid=lambda task: task, on_error="skip")
    def by_callable(task: object) -> None:
        ran.append(task)

    @taskguard.skip_if_closed
    def module_level(task: object) -> None:
        ran.append(task)

    def in_task(w: object) -> None:
        with guard.task(w, on_error="process"):  # type: ignore[arg-type]
            ran.append(w)

    def must_not_run(fn: Callable[[object], object]) -> Callable[[object], object]:
        def call(w: object) -> object:
            result = fn(w)
            if ran:
                raise AssertionError(f"the handler ran for {ran[-1]!r}")
            return result

        return call

    points: dict[str, Callable[[object], object]] = {
        "check": guard.check,  # type: ignore[dict-item]
        "is_closed": guard.is_closed,  # type: ignore[dict-item]
        "check_many": lambda w: guard.check_many([w]),  # type: ignore[list-item]
        "check_many after a valid one": lambda w: guard.check_many(["ok-1", w]),  # type: ignore[list-item]
        "mark_closed": guard.mark_closed,  # type: ignore[dict-item]
        "forget": guard.forget,  # type: ignore[dict-item]
        "@skip_if_closed": must_not_run(bare),
        "@skip_if_closed(workid=name)": must_not_run(lambda w: by_name("x", task_id=w)),
        "@skip_if_closed(workid=callable)": must_not_run(by_callable),
        "module-level @skip_if_closed": must_not_run(module_level),
        "task()": must_not_run(in_task),
        "open_only": must_not_run(lambda w: list(guard.open_only([w]))),
        "open_only(batch_size=10)": must_not_run(
            lambda w: list(guard.open_only([w], batch_size=10, on_error="skip"))
        ),
    }
    return points


def _async_entry_points(guard: AsyncTaskGuard) -> dict[str, Callable[[object], Awaitable[Any]]]:
    ran: list[object] = []

    @guard.skip_if_closed
    async def bare(task: object) -> None:
        ran.append(task)

    @guard.skip_if_closed(workid=lambda task: task, on_error="skip")
    async def by_callable(task: object) -> None:
        ran.append(task)

    async def in_task(w: object) -> None:
        async with guard.task(w, on_error="process"):  # type: ignore[arg-type]
            ran.append(w)

    async def open_only(w: object) -> None:
        async for task in guard.open_only([w], batch_size=4):
            ran.append(task)

    def must_not_run(
        fn: Callable[[object], Awaitable[Any]],
    ) -> Callable[[object], Awaitable[Any]]:
        async def call(w: object) -> object:
            result = await fn(w)
            if ran:
                raise AssertionError(f"the handler ran for {ran[-1]!r}")
            return result

        return call

    return {
        "async check": guard.check,  # type: ignore[dict-item]
        "async is_closed": guard.is_closed,  # type: ignore[dict-item]
        "async check_many": lambda w: guard.check_many(["ok-1", w]),  # type: ignore[list-item]
        "async mark_closed": guard.mark_closed,  # type: ignore[dict-item]
        "async forget": guard.forget,  # type: ignore[dict-item]
        "async @skip_if_closed": must_not_run(bare),
        "async @skip_if_closed(workid=callable)": must_not_run(by_callable),
        "async task()": must_not_run(in_task),
        "async open_only": must_not_run(open_only),
    }


def _judge(sweep: Sweep, point: str, label: str, error: BaseException | None) -> None:
    sweep.tried += 1
    sweep.entry_points.add(point)
    sweep.values.add(label)
    if error is None:
        sweep.failures.append(f"{point}({label}): accepted")
    elif not isinstance(error, InvalidWorkId):
        sweep.failures.append(f"{point}({label}): raised {type(error).__name__}: {error}")
    elif not isinstance(error, ValueError) or not str(error):
        sweep.failures.append(f"{point}({label}): {error!r} is not a clear ValueError")
    else:
        sweep.refused += 1


def bad_input_sweep(server: RedisServer) -> Sweep:
    """Every invalid workid through every entry point, against a live HTTP service
    and a live Redis: each raises ``InvalidWorkId``; neither sees a request."""
    server.ensure_ready()
    server.flush()
    service = FakeTaskStateService(closed=["ok-1"])
    sweep = Sweep()
    with service.serve() as running:
        settings = TaskGuardSettings(service_url=running.url, redis_url=server.url)
        with TaskGuard(settings) as guard, _default(guard):
            before = guard.stats()
            for point, call in _sync_entry_points(guard).items():
                for label, value in BAD_VALUES.items():
                    error: BaseException | None = None
                    try:
                        call(value)
                    except Exception as exc:  # judged below
                        error = exc
                    _judge(sweep, point, label, error)
            moved = {k: v - before[k] for k, v in guard.stats().items() if v != before[k]}

        async def run_async() -> dict[str, int]:
            async with AsyncTaskGuard(settings) as aguard:
                before = aguard.stats()
                for point, call in _async_entry_points(aguard).items():
                    for label, value in BAD_VALUES.items():
                        error: BaseException | None = None
                        try:
                            await call(value)
                        except Exception as exc:  # judged below
                            error = exc
                        _judge(sweep, point, label, error)
                after = aguard.stats()
            return {k: v - before[k] for k, v in after.items() if v != before[k]}

        moved.update({f"async {k}": v for k, v in asyncio.run(run_async()).items()})
        sweep.requests = service.requests
    sweep.redis_commands = {
        name: calls
        for name, calls in server.info_commandstats().items()
        if name not in ("info", "config|resetstat", "flushall")
    }
    sweep.stats_moved = moved
    return sweep


@contextlib.contextmanager
def _default(guard: TaskGuard) -> Iterator[None]:
    taskguard.configure(guard)
    try:
        yield
    finally:
        taskguard.configure(None)


# -- secrets ---------------------------------------------------------------------------------

TOKEN = "tgtok-5ecret-C0FFEE-d3adbeef"
WRONG_TOKEN = "tgtok-wr0ng-5ecret-BADC0DE"
URL_PASSWORD = "urlpw-5ecret-0DDBA11"
REDIS_PASSWORD = "rdspw-5ecret-FEEDF00D"
SECRETS = (TOKEN, WRONG_TOKEN, URL_PASSWORD, REDIS_PASSWORD)


class _Collector(logging.Handler):
    """Keeps every record, formatted with its traceback, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@contextlib.contextmanager
def every_log_at_debug() -> Iterator[_Collector]:
    """Capture every logger at DEBUG (levels and ``disabled`` flags are restored)."""
    root = logging.getLogger()
    collector = _Collector()
    saved: list[tuple[logging.Logger, int, bool]] = [(root, root.level, root.disabled)]
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            saved.append((logger, logger.level, logger.disabled))
            if logger.level > logging.DEBUG:
                logger.setLevel(logging.DEBUG)
            logger.disabled = False
    root.setLevel(logging.DEBUG)
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


def exception_texts(exc: BaseException) -> list[str]:
    """The formatted traceback (every chained cause) and each error's str and repr."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return texts


@dataclass
class LeakHunt:
    """Where the secrets were looked for, and where they were found."""

    texts: dict[str, int] = field(default_factory=dict)  # where -> texts checked
    errors_seen: dict[str, int] = field(default_factory=dict)  # error class -> count
    leaks: list[str] = field(default_factory=list)  # "where: secret ... in text"

    def look(self, where: str, texts: list[str]) -> None:
        self.texts[where] = self.texts.get(where, 0) + len(texts)
        for text in texts:
            for secret in SECRETS:
                if secret in text:
                    self.leaks.append(f"{where}: {secret} in {text[:300]!r}")

    @property
    def total(self) -> int:
        return sum(self.texts.values())


def _faulty_service(service: FakeTaskStateService) -> None:
    service.fail_next(2, 503, retry_after=0)
    service.timeout_next(1, hang=1.0)
    service.malformed_next(1, b'{"subtopic": "CheckTaskState", "data": [1]}')
    service.wrong_workid_next(1)
    service.error_next(1, "backend is sulking")


def _dead_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def leak_hunt(*, cli: bool = True) -> LeakHunt:
    """Exercise every path that writes text with secrets configured (the token,
    a wrong token, a password in the service URL, a Redis password), sync and
    async, then look for the secrets in everything written."""
    hunt = LeakHunt()
    service = FakeTaskStateService(closed=["c-1"], require_token=TOKEN)
    dead = f"http://127.0.0.1:{_dead_port()}/checktaskstate"
    redis_dead = f"redis://tguser:{REDIS_PASSWORD}@127.0.0.1:{_dead_port()}/0"
    fast = {"retry_backoff": 0.001, "retry_backoff_max": 0.002, "request_timeout": 0.3}
    errors: list[BaseException] = []
    with service.serve() as running, every_log_at_debug() as logs:
        url_with_password = running.url.replace("http://", f"http://svc:{URL_PASSWORD}@")
        configs = {
            "token": TaskGuardSettings(
                service_url=running.url,
                auth_token=TOKEN,
                redis_url=redis_dead,
                retry_attempts=1,
                **fast,
            ),
            "token, retried": TaskGuardSettings(
                service_url=running.url, auth_token=TOKEN, retry_attempts=3, **fast
            ),
            "wrong token": TaskGuardSettings(
                service_url=running.url, auth_token=WRONG_TOKEN, **fast
            ),
            "URL password": TaskGuardSettings(service_url=url_with_password, **fast),
            "dead service": TaskGuardSettings(service_url=dead, auth_token=TOKEN, **fast),
            "Redis password in query": TaskGuardSettings(
                service_url=running.url,
                auth_token=TOKEN,
                retry_attempts=1,
                redis_url=f"redis://127.0.0.1:{_dead_port()}/0?password={REDIS_PASSWORD}",
                **fast,
            ),
        }
        for name, settings in configs.items():
            _faulty_service(service)
            with TaskGuard(settings) as guard:
                hunt.look("repr", [repr(guard), repr(settings), str(settings)])
                hunt.look("repr", [repr(guard._transport), repr(guard._redis)])
                for n in range(8):
                    try:
                        guard.check(f"c-{n % 2}-{name}" if n else "c-1")
                    except TaskGuardError as exc:
                        errors.append(exc)
            errors += asyncio.run(_async_round(settings, service))
        hunt.look(
            "repr",
            [
                repr(UrllibTransport(running.url, auth_token=TOKEN)),
                repr(AiohttpTransport(url_with_password, auth_token=TOKEN)),
            ],
        )
        hunt.look("logs", logs.texts)
    for exc in errors:
        name = type(exc).__name__
        hunt.errors_seen[name] = hunt.errors_seen.get(name, 0) + 1
        hunt.look("exceptions", exception_texts(exc))
    if cli:
        with service.serve() as running:
            hunt.look("cli", _cli_outputs(running.url, dead))
    return hunt


async def _async_round(
    settings: TaskGuardSettings, service: FakeTaskStateService
) -> list[BaseException]:
    errors: list[BaseException] = []
    _faulty_service(service)
    async with AsyncTaskGuard(settings) as guard:
        for n in range(8):
            try:
                await guard.check(f"a-{n}")
            except TaskGuardError as exc:
                errors.append(exc)
    return errors


def _cli_outputs(url: str, dead: str) -> list[str]:
    """stdout and stderr of ``python -m taskguard.cli check`` in good and bad cases."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASKGUARD_")}
    base.update(TASKGUARD_RETRY_BACKOFF="0.001", TASKGUARD_RETRY_BACKOFF_MAX="0.002")
    runs = [
        {"TASKGUARD_SERVICE_URL": url, "TASKGUARD_AUTH_TOKEN": TOKEN},
        {"TASKGUARD_SERVICE_URL": url, "TASKGUARD_AUTH_TOKEN": WRONG_TOKEN},
        {"TASKGUARD_SERVICE_URL": dead, "TASKGUARD_AUTH_TOKEN": TOKEN},
        {
            "TASKGUARD_SERVICE_URL": url,
            "TASKGUARD_AUTH_TOKEN": TOKEN,
            "TASKGUARD_REQUEST_TIMEOUT": "-1",
        },
        {
            "TASKGUARD_SERVICE_URL": url,
            "TASKGUARD_AUTH_TOKEN": TOKEN,
            "TASKGUARD_REDIS_URL": f"redis://u:{REDIS_PASSWORD}@127.0.0.1:{_dead_port()}/0",
        },
        {
            "TASKGUARD_SERVICE_URL": url.replace("http://", f"http://svc:{URL_PASSWORD}@"),
            "TASKGUARD_AUTH_TOKEN": TOKEN,
            "TASKGUARD_RETRY_ATTEMPTS": "0",
        },
    ]
    outputs: list[str] = []
    for extra in runs:
        done = subprocess.run(
            [sys.executable, "-m", "taskguard.cli", "check", "c-1", "open-1", "--json"],
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs += [done.stdout, done.stderr]
    return outputs
