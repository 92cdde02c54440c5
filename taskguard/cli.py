"""The ``taskguard`` command: ``check``, ``serve`` and ``demo``.

Every failure ends with one line on stderr and a non-zero exit, never a
traceback: 1 when a lookup failed, 2 for bad usage or bad settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from taskguard.errors import TaskGuardError
from taskguard.settings import TaskGuardSettings

__all__ = ["main"]

EXIT_LOOKUP_FAILED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ValidationError as exc:
        _fail(settings_error_line(exc))
        return EXIT_USAGE
    except TaskGuardError as exc:
        _fail(f"taskguard: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def settings_error_line(exc: ValidationError) -> str:
    """One line naming the bad setting(s) by their environment variable."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(loc) for loc in error["loc"]) or "settings"
        env = f"TASKGUARD_{field.upper()}" if field != "settings" else "settings"
        parts.append(f"{env}: {error['msg']}")
    return "taskguard: invalid settings: " + "; ".join(parts)


def _fail(line: str) -> None:
    print(line, file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskguard",
        description="Skip contact-center tasks the customer already closed (CheckTaskState).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="ask whether tasks are closed (settings from TASKGUARD_* variables)",
        description="Print workid, closed and origin for each WORKID. Exit 0 when every "
        "lookup succeeded, 1 otherwise; settings come from TASKGUARD_* variables.",
    )
    check.add_argument("workids", nargs="+", metavar="WORKID")
    check.add_argument("--json", action="store_true", help="one JSON object per line")
    check.set_defaults(run=_check)

    serve = sub.add_parser(
        "serve",
        help="run the reference CheckTaskState service over HTTP",
        description="Run the bundled reference CheckTaskState service until Ctrl-C; "
        "it prints the URL to use as service_url once it is ready.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument(
        "--closed", default="", help="comma-separated workids the service reports closed"
    )
    serve.set_defaults(run=_serve)

    demo = sub.add_parser(
        "demo",
        help="run a guarded worker over a generated workload and summarise it",
        description="Start the reference service in-process (or use --service-url), run a "
        "guarded worker over a generated workload with a progress bar, and print a summary.",
    )
    demo.add_argument("--tasks", type=_positive_int, default=10_000, help="tasks to generate")
    demo.add_argument("--redis-url", default=None, help="share closed workids through Redis")
    demo.add_argument("--service-url", default=None, help="a real CheckTaskState endpoint")
    demo.add_argument("--closed-share", type=float, default=0.3, help="share closed by customers")
    demo.add_argument("--duplicates", type=float, default=0.1, help="share of redeliveries")
    demo.add_argument("--batch-size", type=_positive_int, default=100, help="tasks per check")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _check(args: argparse.Namespace) -> int:
    from taskguard.guard import TaskGuard

    settings = TaskGuardSettings()
    failed = False
    with TaskGuard(settings) as guard:
        for workid in args.workids:
            try:
                state = guard.check(workid)
            except TaskGuardError as exc:
                failed = True
                _fail(f"taskguard: {workid}: {exc}")
                continue
            if args.json:
                line = json.dumps(
                    {"workid": state.workid, "closed": state.closed, "origin": state.origin.value}
                )
            else:
                line = f"{state.workid}\t{'closed' if state.closed else 'open'}\t{state.origin}"
            print(line, flush=True)
    return EXIT_LOOKUP_FAILED if failed else 0


def _serve(args: argparse.Namespace) -> int:
    from taskguard.testing import run_server

    closed = [w.strip() for w in args.closed.split(",") if w.strip()]

    def ready(url: str) -> None:
        print(f"CheckTaskState reference service ready: {url}", flush=True)
        print(f"use: export TASKGUARD_SERVICE_URL={url}", flush=True)

    try:
        run_server(args.host, args.port, closed, on_ready=ready)
    except OSError as exc:
        _fail(f"taskguard: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_USAGE
    return 0


def _demo(args: argparse.Namespace) -> int:
    from taskguard.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
