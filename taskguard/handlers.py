"""The faces users touch: ``@skip_if_closed``, ``task()`` handles, ``open_only`` loops.

What is decided here is shared by both guards: where a handler's workid is,
what a task's workid is, how a batch of tasks becomes the open ones. The guards
supply four small operations (:class:`Gatekeeper`); this module never does I/O
of its own.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from itertools import islice
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from taskguard.core import Batch, GuardCore
from taskguard.errors import InvalidWorkId, TaskStateUnknown
from taskguard.state import (
    MAX_WORKID_LENGTH,
    OnError,
    Origin,
    TaskState,
    as_on_error,
    validate_workid,
    validate_workids,
)

__all__ = [
    "Gatekeeper",
    "GuardDecorator",
    "OnSkipTask",
    "SkipIfClosed",
    "TaskHandle",
    "WorkidSpec",
    "atake_batch",
    "decide_batch",
    "make_task_workid",
    "take_batch",
    "workid_of",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

WorkidSpec = str | Callable[..., object] | None
"""How to find a workid: an argument name, a callable, or None (by convention)."""

OnSkipTask = Callable[[T, TaskState], object]
"""``open_only``'s callback for each task it leaves out: ``on_skip(task, state)``."""


class Gatekeeper(Protocol):
    """What a face needs from a guard."""

    def _gate(self, workid: object, on_error: OnError | str | None) -> tuple[TaskState, bool]: ...

    async def _agate(
        self, workid: object, on_error: OnError | str | None
    ) -> tuple[TaskState, bool]: ...

    def _mark(self, wid: str) -> None: ...

    async def _amark(self, wid: str) -> None: ...


class TaskHandle:
    """What ``guard.task(workid)`` yields.

    ``state`` is the :class:`TaskState`; ``closed`` is True when the task is
    confirmed closed; ``skip`` is True when the body should not run (closed, or
    a failed lookup under ``on_error="skip"``).
    """

    __slots__ = ("skip", "state")

    def __init__(self, state: TaskState, skip: bool) -> None:
        self.state = state
        self.skip = skip

    @property
    def closed(self) -> bool:
        return self.state.closed

    @property
    def workid(self) -> str:
        return self.state.workid

    def __repr__(self) -> str:
        return f"TaskHandle(state={self.state!r}, skip={self.skip})"


# -- finding workids ------------------------------------------------------------


def workid_of(task: object) -> object:
    """A task's workid: the task itself (str/int), its ``workid`` key (a mapping),
    or its ``workid`` attribute. Raises :class:`InvalidWorkId` when it has none."""
    if type(task) is dict and "workid" in task:  # the usual message: skip the ABC check
        return task["workid"]
    if isinstance(task, (str, int)):
        return task
    if isinstance(task, Mapping):
        try:
            return task["workid"]
        except KeyError:
            raise InvalidWorkId(
                f"task mapping has no 'workid' key (keys: {sorted(map(str, task))[:10]}); "
                "pass workid= to say where it is",
                workid=None,
            ) from None
    found = getattr(task, "workid", _MISSING)
    if found is _MISSING:
        raise InvalidWorkId(
            f"cannot find a workid in a {type(task).__name__}: pass a str/int, a mapping "
            "with a 'workid' key, an object with a 'workid' attribute, or use workid=",
            workid=None,
        )
    return found


_MISSING: Any = object()


def _default_task_workid(task: object) -> str:
    # validate_workid(workid_of(task)) in one call, for the usual task: a dict
    # whose workid is a plain string. Anything else takes the full path.
    if type(task) is dict:
        wid = task.get("workid")
        if (
            type(wid) is str
            and 0 < len(wid) <= MAX_WORKID_LENGTH
            and wid.isprintable()
            and not wid.isspace()
        ):
            return wid
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


class _ArgLocator:
    """Finds a handler's workid in its call arguments; set up once per decoration."""

    __slots__ = ("default", "index", "name")

    def __init__(self, fn: Callable[..., Any], spec: str | None) -> None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # a builtin or odd callable: first argument
            params = []
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
            shift = 1
        else:
            shift = 0
        names = [p.name for p in params]
        if spec is None:
            spec = next((n for n in ("workid", "work_id") if n in names), None)
        if spec is not None and spec not in names:
            raise TypeError(f"{_name(fn)} has no argument named {spec!r} to take the workid from")
        chosen = params[names.index(spec)] if spec is not None else (params[0] if params else None)
        by_position = (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        )
        if chosen is None:  # no signature to read: the first argument
            self.name, self.index = None, shift
        else:
            self.name = chosen.name if chosen.kind is not inspect.Parameter.VAR_POSITIONAL else None
            self.index = params.index(chosen) + shift if chosen.kind in by_position else -1
        empty = inspect.Parameter.empty
        self.default = _MISSING if chosen is None or chosen.default is empty else chosen.default

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        index = self.index
        if 0 <= index < len(args):
            found = args[index]
        elif self.name is not None and self.name in kwargs:
            found = kwargs[self.name]
        elif self.default is not _MISSING:
            found = self.default
        else:
            raise InvalidWorkId(
                "cannot find the workid in the handler's arguments; pass workid= "
                "(an argument name or a callable)",
                workid=None,
            )
        return workid_of(found)


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):  # unwraps functools.partial
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


# -- the decorator -----------------------------------------------------------------


class _Decorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R | None]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R | None]: ...


class SkipIfClosed:
    """``@skip_if_closed`` bound to a guard (or to the default guard's router).

    Bare (``@skip_if_closed``) or with options (``@skip_if_closed(workid=...,
    on_skip=..., on_error=..., mark_closed_on_success=...)``), on ``def`` and
    ``async def`` handlers. The handler runs only when its task is not closed;
    otherwise the wrapper returns ``on_skip(state)`` (or None). An invalid or
    missing workid always raises :class:`InvalidWorkId`.
    """

    def __init__(self, guard: Gatekeeper, *, sync_ok: bool) -> None:
        self._guard = guard
        self._sync_ok = sync_ok

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R | None]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R | None]: ...

    @overload
    def __call__(
        self,
        fn: None = None,
        /,
        *,
        workid: WorkidSpec = None,
        on_skip: Callable[[TaskState], object] | None = None,
        on_error: OnError | str | None = None,
        mark_closed_on_success: bool = False,
    ) -> _Decorator: ...

    def __call__(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        workid: WorkidSpec = None,
        on_skip: Callable[[TaskState], object] | None = None,
        on_error: OnError | str | None = None,
        mark_closed_on_success: bool = False,
    ) -> Any:
        if on_error is not None:
            on_error = as_on_error(on_error)  # a typo fails at decoration, not per call

        def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
            return self._wrap(handler, workid, on_skip, on_error, mark_closed_on_success)

        return decorate if fn is None else decorate(fn)

    def _wrap(
        self,
        handler: Callable[..., Any],
        spec: WorkidSpec,
        on_skip: Callable[[TaskState], object] | None,
        on_error: OnError | str | None,
        mark: bool,
    ) -> Callable[..., Any]:
        if not callable(handler):
            raise TypeError(f"skip_if_closed decorates a callable, not {type(handler).__name__}")
        locate: Callable[[tuple[Any, ...], dict[str, Any]], object]
        if callable(spec):
            find = spec
            locate = lambda args, kwargs: workid_of(find(*args, **kwargs))  # noqa: E731
        else:
            locate = _ArgLocator(handler, spec)
        guard = self._guard

        if _is_async(handler):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                state, skip = await guard._agate(locate(args, kwargs), on_error)
                if skip:
                    return None if on_skip is None else on_skip(state)
                result = await handler(*args, **kwargs)
                if mark:
                    await guard._amark(state.workid)
                return result

            return functools.wraps(handler)(async_wrapper)

        if not self._sync_ok:
            raise TypeError(
                f"AsyncTaskGuard.skip_if_closed needs an async def handler; {_name(handler)} "
                "is a plain function: decorate it with a TaskGuard instead"
            )

        gate = guard._gate  # bound once: the skip path is a handful of calls

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state, skip = gate(locate(args, kwargs), on_error)
            if skip:
                return None if on_skip is None else on_skip(state)
            result = handler(*args, **kwargs)
            if mark:
                guard._mark(state.workid)
            return result

        return functools.wraps(handler)(wrapper)


class GuardDecorator:
    """Makes ``guard.skip_if_closed`` a :class:`SkipIfClosed` bound to that guard."""

    def __init__(self, *, sync_ok: bool) -> None:
        self._sync_ok = sync_ok

    @overload
    def __get__(self, guard: None, owner: type) -> GuardDecorator: ...

    @overload
    def __get__(self, guard: Gatekeeper, owner: type) -> SkipIfClosed: ...

    def __get__(self, guard: Gatekeeper | None, owner: type) -> SkipIfClosed | GuardDecorator:
        if guard is None:  # looked up on the class: documentation, introspection
            return self
        return SkipIfClosed(guard, sync_ok=self._sync_ok)


# -- open_only ----------------------------------------------------------------------


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
