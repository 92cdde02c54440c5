"""The faces users touch: ``@skip_if_closed`` and ``task()`` handles
(``open_only`` loops are in ``loops.py``).

What is decided here is shared by both guards: where a handler's workid is and
what a task's workid is. The guards supply four small operations
(:class:`Gatekeeper`); this module never does I/O of its own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from taskguard.errors import InvalidWorkId
from taskguard.state import (
    OnError,
    TaskState,
    as_on_error,
)

__all__ = [
    "Gatekeeper",
    "GuardDecorator",
    "SkipIfClosed",
    "TaskHandle",
    "WorkidSpec",
    "workid_of",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

WorkidSpec = str | Callable[..., object] | None
"""How to find a workid: an argument name, a callable, or None (by convention)."""


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
