"""The public surface: DESIGN section 3's names are a contract."""

from __future__ import annotations

import inspect

import taskguard
from taskguard import (
    InvalidWorkId,
    LookupFailed,
    ProtocolError,
    ServiceError,
    TaskGuardError,
)

CONTRACT = {
    "TaskGuard",
    "AsyncTaskGuard",
    "TaskGuardSettings",
    "TaskState",
    "skip_if_closed",
    "configure",
    "TaskGuardError",
    "InvalidWorkId",
    "ProtocolError",
    "ServiceError",
    "LookupFailed",
}


def test_all_is_sorted_and_complete() -> None:
    assert taskguard.__all__ == sorted(taskguard.__all__)
    assert set(taskguard.__all__) >= CONTRACT
    for name in taskguard.__all__:
        assert hasattr(taskguard, name), name


def test_error_tree() -> None:
    for error in (InvalidWorkId, ProtocolError, ServiceError, LookupFailed):
        assert issubclass(error, TaskGuardError)
    assert issubclass(InvalidWorkId, ValueError)
    # "could not find out" errors share a parent that "bad input" does not.
    assert not issubclass(InvalidWorkId, taskguard.TaskStateUnknown)
    assert issubclass(LookupFailed, taskguard.TaskStateUnknown)


def test_guard_methods_of_the_contract() -> None:
    sync_names = ["check", "is_closed", "check_many", "mark_closed", "forget", "stats", "close"]
    for name in [*sync_names, "skip_if_closed", "task", "open_only", "from_settings", "from_env"]:
        assert hasattr(taskguard.TaskGuard, name), name
    for name in ["check", "is_closed", "check_many", "mark_closed", "forget", "aclose"]:
        assert inspect.iscoroutinefunction(getattr(taskguard.AsyncTaskGuard, name)), name
    assert inspect.isasyncgenfunction(taskguard.AsyncTaskGuard.open_only)
