"""The faces on the blocking guard: @skip_if_closed, task(), open_only."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from taskguard import (
    InvalidWorkId,
    LookupFailed,
    ServiceError,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
)
from taskguard.testing import FakeTaskStateService


@dataclass
class Email:
    workid: str
    body: str = ""


@pytest.fixture
def service() -> FakeTaskStateService:
    return FakeTaskStateService(closed=["C1", "C2", "C3"])


@pytest.fixture
def guard(service: FakeTaskStateService) -> Iterator[TaskGuard]:
    settings = TaskGuardSettings(retry_attempts=1, service_breaker_failures=0)
    with TaskGuard(settings, transport=service) as g:
        yield g


# -- @skip_if_closed ---------------------------------------------------------------


def test_bare_decorator_runs_open_tasks_and_skips_closed_ones(guard: TaskGuard) -> None:
    ran: list[str] = []

    @guard.skip_if_closed
    def handle(workid: str) -> str:
        ran.append(workid)
        return f"done {workid}"

    assert handle("O1") == "done O1"
    assert handle("C1") is None
    assert ran == ["O1"]
    assert guard.stats()["skips"] == 1
    assert guard.stats()["processed"] == 1


def test_on_skip_result_is_returned(guard: TaskGuard) -> None:
    @guard.skip_if_closed(on_skip=lambda state: ("skipped", state))
    def handle(workid: str) -> str:
        return "ran"

    assert handle("C1") == ("skipped", TaskState("C1", True, "service"))  # type: ignore[arg-type]


def test_decorator_keeps_name_doc_and_signature(guard: TaskGuard) -> None:
    def handle(task: Email, retries: int = 0) -> str:
        """Handle one email."""
        return task.workid

    wrapped = guard.skip_if_closed(handle)
    assert wrapped.__name__ == "handle"
    assert wrapped.__doc__ == "Handle one email."
    assert inspect.signature(wrapped) == inspect.signature(handle)
    assert wrapped.__wrapped__ is handle  # type: ignore[attr-defined]


def test_workid_found_in_a_task_object_a_mapping_or_by_keyword(guard: TaskGuard) -> None:
    @guard.skip_if_closed
    def handle(task: Any, extra: int = 0) -> str:
        return "ran"

    assert handle(Email("C1")) is None
    assert handle({"workid": "C2", "body": "hi"}) is None
    assert handle(task={"workid": "O1"}) == "ran"
    assert handle(7) == "ran"


def test_argument_named_workid_or_work_id_wins(guard: TaskGuard) -> None:
    @guard.skip_if_closed
    def one(payload: dict[str, str], workid: str) -> str:
        return "ran"

    @guard.skip_if_closed
    def two(payload: dict[str, str], *, work_id: str) -> str:
        return "ran"

    assert one({"workid": "O1"}, "C1") is None
    assert one({"workid": "C1"}, workid="O2") == "ran"
    assert two({}, work_id="C1") is None


def test_explicit_workid_by_name_or_callable(guard: TaskGuard) -> None:
    @guard.skip_if_closed(workid="ticket")
    def by_name(queue: str, ticket: str) -> str:
        return "ran"

    @guard.skip_if_closed(workid=lambda message, **_: message["meta"]["id"])
    def by_callable(message: dict[str, Any], priority: int = 0) -> str:
        return "ran"

    assert by_name("billing", "C1") is None
    assert by_name("billing", ticket="O1") == "ran"
    assert by_callable({"meta": {"id": "C2"}}) is None
    assert by_callable({"meta": {"id": "O2"}}, priority=3) == "ran"


def test_unknown_workid_argument_name_fails_at_decoration(guard: TaskGuard) -> None:
    with pytest.raises(TypeError, match="ticket"):

        @guard.skip_if_closed(workid="ticket")
        def handle(task: str) -> None: ...


def test_methods_skip_self(guard: TaskGuard) -> None:
    class Worker:
        @guard.skip_if_closed
        def handle(self, task: Email) -> str:
            return "ran"

    assert Worker().handle(Email("C3")) is None
    assert Worker().handle(Email("O3")) == "ran"


@pytest.mark.parametrize("on_error", ["raise", "process", "skip"])
def test_missing_or_invalid_workid_always_raises(guard: TaskGuard, on_error: str) -> None:
    @guard.skip_if_closed(on_error=on_error)
    def handle(task: Any) -> str:
        return "ran"

    for bad in (None, "", {"id": "x"}, object(), Email("")):
        with pytest.raises(InvalidWorkId):
            handle(bad)


def test_on_error_raise_propagates_so_the_queue_redelivers(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    ran: list[str] = []

    @guard.skip_if_closed
    def handle(workid: str) -> None:
        ran.append(workid)

    service.fail_next(1)
    with pytest.raises(LookupFailed):
        handle("C1")
    assert ran == []


def test_on_error_process_runs_the_handler(guard: TaskGuard, service: FakeTaskStateService) -> None:
    @guard.skip_if_closed(on_error="process")
    def handle(workid: str) -> str:
        return "ran"

    service.error_next(1)
    assert handle("C1") == "ran"


def test_on_error_skip_skips_with_an_error_state(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    seen: list[TaskState] = []

    @guard.skip_if_closed(on_error="skip", on_skip=seen.append)
    def handle(workid: str) -> str:
        return "ran"

    service.fail_next(1)
    assert handle("O1") is None
    assert seen == [TaskState("O1", False, "error")]  # type: ignore[list-item]


def test_on_error_policy_from_settings(service: FakeTaskStateService) -> None:
    settings = TaskGuardSettings(retry_attempts=1, on_error="process")
    with TaskGuard(settings, transport=service) as guard:

        @guard.skip_if_closed
        def handle(workid: str) -> str:
            return "ran"

        service.fail_next(1)
        assert handle("C1") == "ran"


def test_bad_on_error_fails_at_decoration(guard: TaskGuard) -> None:
    with pytest.raises(ValueError, match="on_error"):
        guard.skip_if_closed(on_error="ignore")


def test_mark_closed_on_success_skips_a_redelivered_copy(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    ran: list[str] = []

    @guard.skip_if_closed(mark_closed_on_success=True)
    def handle(workid: str) -> None:
        ran.append(workid)

    handle("O1")
    handle("O1")
    assert ran == ["O1"]
    assert service.requests == 1


def test_a_failing_handler_is_not_marked_closed(guard: TaskGuard) -> None:
    calls = itertools.count()

    @guard.skip_if_closed(mark_closed_on_success=True)
    def handle(workid: str) -> None:
        if next(calls) == 0:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handle("O1")
    handle("O1")  # the redelivery runs
    assert next(calls) == 2


def test_async_handlers_work_under_the_blocking_guard(guard: TaskGuard) -> None:
    @guard.skip_if_closed
    async def handle(workid: str) -> str:
        return "ran"

    assert inspect.iscoroutinefunction(handle)
    assert asyncio.run(handle("O1")) == "ran"
    assert asyncio.run(handle("C1")) is None
    assert asyncio.run(handle("C1")) is None  # answered in-process, no thread needed
    stats = guard.stats()
    assert (stats["checks"], stats["lookups"], stats["local_hits"]) == (3, 2, 1)


def test_partials_of_async_functions_are_detected(guard: TaskGuard) -> None:
    async def handle(prefix: str, workid: str) -> str:
        return prefix + workid

    wrapped = guard.skip_if_closed(workid=lambda *a, **k: k["workid"])(
        functools.partial(handle, "ran ")
    )
    assert asyncio.run(wrapped(workid="O1")) == "ran O1"


# -- task() ---------------------------------------------------------------------------


def test_task_context_manager(guard: TaskGuard) -> None:
    with guard.task("C1") as t:
        assert (t.closed, t.skip, t.state.origin) == (True, True, "service")
    with guard.task("O1") as t:
        assert (t.closed, t.skip) == (False, False)


def test_task_applies_on_error(guard: TaskGuard, service: FakeTaskStateService) -> None:
    service.fail_next(1)
    with guard.task("O1", on_error="skip") as t:
        assert (t.closed, t.skip, t.state.origin) == (False, True, "error")
    service.fail_next(1)
    with guard.task("O1", on_error="process") as t:
        assert (t.closed, t.skip) == (False, False)
    service.error_next(1)
    with pytest.raises(ServiceError), guard.task("O1"):
        pytest.fail("the body must not run")


def test_task_marks_closed_on_success_only(guard: TaskGuard) -> None:
    with pytest.raises(RuntimeError), guard.task("O1", mark_closed_on_success=True):
        raise RuntimeError("handler failed")
    with guard.task("O1", mark_closed_on_success=True) as t:
        assert not t.skip
    with guard.task("O1") as t:
        assert t.closed
        assert t.state.origin == "local"


# -- open_only --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_open_only_yields_open_tasks_in_order(guard: TaskGuard, batch_size: int) -> None:
    tasks = [Email("O1"), Email("C1"), {"workid": "O2"}, "C2", 5, Email("C3")]
    skipped: list[tuple[Any, TaskState]] = []
    out = list(
        guard.open_only(tasks, batch_size=batch_size, on_skip=lambda t, s: skipped.append((t, s)))
    )
    assert out == [Email("O1"), {"workid": "O2"}, 5]
    assert [t for t, _ in skipped] == [Email("C1"), "C2", Email("C3")]
    assert all(s.closed for _, s in skipped)


def test_open_only_is_lazy_over_an_endless_source(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    endless = (f"O{i}" for i in itertools.count())
    first = list(itertools.islice(guard.open_only(endless, batch_size=4), 6))
    assert first == ["O0", "O1", "O2", "O3", "O4", "O5"]
    assert service.requests == 8  # two batches of four, nothing more pulled


def test_open_only_with_a_workid_callable(guard: TaskGuard) -> None:
    tasks = [("C1", "x"), ("O1", "y")]
    assert list(guard.open_only(tasks, workid=lambda t: t[0])) == [("O1", "y")]


def test_open_only_applies_on_error_task_by_task(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    service.error_next(1)  # only the first lookup fails
    out = list(guard.open_only(["O1", "O2", "C1"], on_error="process"))
    assert out == ["O1", "O2"]
    service.error_next(1)
    skipped: list[Any] = []
    out = list(
        guard.open_only(["O3", "O4"], on_error="skip", on_skip=lambda t, s: skipped.append(t))
    )
    assert (out, skipped) == (["O4"], ["O3"])


def test_open_only_raise_keeps_the_pending_tasks(
    guard: TaskGuard, service: FakeTaskStateService
) -> None:
    service.error_next(1)
    gen = guard.open_only(["O1", "O2", "O3"], batch_size=3)
    with pytest.raises(ServiceError) as info:
        list(gen)
    # Which lookup failed depends on thread timing; nothing after it is lost.
    pending = info.value.pending_tasks  # type: ignore[attr-defined]
    assert pending[0] == info.value.workid
    assert pending == ["O1", "O2", "O3"][["O1", "O2", "O3"].index(pending[0]) :]


def test_open_only_hands_out_checked_tasks_before_an_invalid_one(guard: TaskGuard) -> None:
    got: list[Any] = []
    tasks = guard.open_only(["O1", "O2", None, "O3"], batch_size=10)
    got.append(next(tasks))
    got.append(next(tasks))
    with pytest.raises(InvalidWorkId) as info:
        next(tasks)
    assert got == ["O1", "O2"]
    assert info.value.task is None  # type: ignore[attr-defined]
    assert info.value.pending_tasks == [None, "O3"]  # type: ignore[attr-defined]


def test_open_only_hands_out_what_came_before_a_broken_source(guard: TaskGuard) -> None:
    def source() -> Iterator[str]:
        yield "O1"
        yield "C1"
        raise ConnectionError("queue went away")

    got: list[str] = []
    with pytest.raises(ConnectionError):
        got.extend(guard.open_only(source(), batch_size=10))
    assert got == ["O1"]


def test_open_only_rejects_a_bad_batch_size(guard: TaskGuard) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        list(guard.open_only(["O1"], batch_size=0))
