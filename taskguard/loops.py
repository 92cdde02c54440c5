"""``open_only``: a worker loop that yields only the tasks still open.

Shared by both guards: pulling a batch from the source (blocking or async),
finding each task's workid, and deciding which tasks of a checked batch go
out. The guards do the checking; nothing here does I/O of its own.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from itertools import islice
from typing import Any, TypeVar

from taskguard.core import Batch, GuardCore
from taskguard.errors import InvalidWorkId, TaskStateUnknown
from taskguard.handlers import WorkidSpec, workid_of
from taskguard.state import (
    OnError,
    Origin,
    TaskState,
    validate_workid,
    validate_workids,
)

__all__ = ["OnSkipTask", "atake_batch", "decide_batch", "make_task_workid", "take_batch"]

T = TypeVar("T")

OnSkipTask = Callable[[T, TaskState], object]
"""``open_only``'s callback for each task it leaves out: ``on_skip(task, state)``."""


def _default_task_workid(task: object) -> str:
    # A named function, not a lambda: _locate_all recognises it to take the
    # C-level path for a batch of dicts.
    return validate_workid(workid_of(task))


def make_task_workid(spec: WorkidSpec) -> Callable[[Any], str]:
    """``open_only``'s workid finder over one task, returning a valid workid."""
    if spec is None:
        return _default_task_workid
    if callable(spec):
        return lambda task: validate_workid(spec(task))
    if isinstance(spec, str):  # a key or attribute name
        name = spec
        return lambda task: validate_workid(
            task[name] if isinstance(task, Mapping) else getattr(task, name)
        )
    raise TypeError(f"workid= must be a callable or a name, not {type(spec).__name__}")


def take_batch(
    source: Iterator[T], size: int, locate: Callable[[T], str]
) -> tuple[list[T], list[str], BaseException | None]:
    """Pull up to ``size`` tasks, blocking on the source like a ``for`` loop would.
    Returns the tasks, their workids, and why pulling stopped early (the source's
    ``StopIteration``, its error, or an invalid workid), which the caller raises
    after it has handed out the tasks before it."""
    _check_batch_size(size)
    tasks: list[T] = []
    stop: BaseException | None = None
    try:
        tasks.extend(islice(source, size))  # C-level, and keeps what came before an error
    except Exception as exc:  # the source broke: hand out what was pulled first
        stop = exc
    else:
        if len(tasks) < size:
            stop = StopIteration()
    return _locate_all(tasks, locate, stop)


async def atake_batch(
    source: AsyncIterator[T], size: int, locate: Callable[[T], str]
) -> tuple[list[T], list[str], BaseException | None]:
    """:func:`take_batch` over an async iterator (``StopAsyncIteration`` ends it)."""
    _check_batch_size(size)
    tasks: list[T] = []
    stop: BaseException | None = None
    try:
        while len(tasks) < size:
            tasks.append(await anext(source))
    except StopAsyncIteration as end:
        stop = end
    except Exception as exc:  # the source broke: hand out what was pulled first
        stop = exc
    return _locate_all(tasks, locate, stop)


_WORKID_KEY: Callable[[Any], object] = operator.itemgetter("workid")


def _all_dicts(tasks: list[Any]) -> bool:
    return len(set(map(type, tasks))) == 1 and type(tasks[0]) is dict if tasks else False


def _check_batch_size(size: int) -> None:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, not {size}")


def _locate_all(
    tasks: list[T], locate: Callable[[T], str], stop: BaseException | None
) -> tuple[list[T], list[str], BaseException | None]:
    """The workids of ``tasks``. At an invalid one, the batch ends before it: the
    error carries ``task`` and ``pending_tasks`` (it and the tasks pulled after it),
    so that nothing taken from the queue is lost."""
    try:
        if locate is _default_task_workid and _all_dicts(tasks):
            # The usual batch, messages as dicts: C-level passes, no call per task.
            return tasks, validate_workids(map(_WORKID_KEY, tasks)), stop
        return tasks, list(map(locate, tasks)), stop  # one C-level pass
    except (InvalidWorkId, KeyError):
        pass
    wids: list[str] = []
    for i, task in enumerate(tasks):
        try:
            wids.append(locate(task))
        except InvalidWorkId as exc:
            exc.task = task  # type: ignore[attr-defined]
            exc.pending_tasks = tasks[i:]  # type: ignore[attr-defined]
            return tasks[:i], wids, exc
    return tasks, wids, stop


def decide_batch(
    core: GuardCore,
    tasks: list[T],
    wids: list[str],
    batch: Batch,
    on_skip: OnSkipTask[T] | None,
    policy: OnError,
) -> Iterator[T]:
    """The open tasks of a checked batch, in order; ``on_skip`` for the others.

    ``on_error`` applies task by task. Under ``"raise"`` the failure is raised at
    the failing task, carrying ``pending_tasks`` (it and the rest of the batch,
    not yet handed out) so that nothing pulled from the queue is lost.
    """
    outcomes = batch.outcomes
    if not batch.failed and on_skip is None:
        # Every task has an answer and nobody is told about skips: pick the open
        # ones in one comprehension. (With on_skip the loop below keeps each
        # on_skip call between the tasks around it, so acks stay in queue order.)
        # An answer is a TaskState, or a bare bool straight from Redis.
        open_tasks = [
            t
            for t, w in zip(tasks, wids, strict=True)
            if not (o if type(o := outcomes[w]) is bool else o.closed)  # type: ignore[union-attr]
        ]
        core.stats.add("processed", len(open_tasks))
        core.stats.add("skips", len(tasks) - len(open_tasks))
        yield from open_tasks
        return
    skips, processed = core.stats.skips, core.stats.processed
    for i, (task, wid) in enumerate(zip(tasks, wids, strict=True)):
        outcome = outcomes[wid]
        if type(outcome) is bool:  # a bare Redis answer: its state, now it is needed
            outcome = outcomes[wid] = TaskState(wid, outcome, Origin.REDIS)
        if type(outcome) is TaskState:  # an answer: core.gate's first case, without a call
            if outcome.closed:
                next(skips)
                if on_skip is not None:
                    on_skip(task, outcome)
            else:
                next(processed)
                yield task
            continue
        try:
            state, skip = core.gate(wid, outcome, policy)  # type: ignore[arg-type]
        except TaskStateUnknown as exc:
            exc.pending_tasks = tasks[i:]  # type: ignore[attr-defined]
            raise
        if not skip:
            yield task
        elif on_skip is not None:
            on_skip(task, state)
