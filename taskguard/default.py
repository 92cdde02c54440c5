"""The process-wide default guard behind module-level ``@skip_if_closed``.

Built lazily from the environment (``TASKGUARD_*``) on first use, replaceable
with :func:`configure`. Blocking handlers use the default :class:`TaskGuard`;
``async def`` handlers use the default :class:`AsyncTaskGuard`, or, when only a
blocking guard was configured, that guard (its lookups run in a worker thread).
"""

from __future__ import annotations

import threading

from taskguard.aguard import AsyncTaskGuard
from taskguard.errors import ConfigurationError
from taskguard.guard import TaskGuard
from taskguard.handlers import Gatekeeper, SkipIfClosed
from taskguard.state import OnError, TaskState

__all__ = ["configure", "default_async_guard", "default_guard", "skip_if_closed"]

_lock = threading.Lock()
_sync: TaskGuard | None = None
_async: AsyncTaskGuard | None = None


def configure(guard: TaskGuard | AsyncTaskGuard | None) -> None:
    """Make ``guard`` the default for module-level ``@skip_if_closed``.

    A :class:`TaskGuard` serves blocking handlers (and async ones, unless an
    :class:`AsyncTaskGuard` is configured too); an :class:`AsyncTaskGuard`
    serves async handlers. ``configure(None)`` drops both defaults without
    closing them (the caller owns them); the next use builds fresh ones from
    the environment. Raises TypeError for anything else.
    """
    global _sync, _async
    with _lock:
        if guard is None:
            _sync = _async = None
        elif isinstance(guard, AsyncTaskGuard):
            _async = guard
        elif isinstance(guard, TaskGuard):
            _sync = guard
        else:
            raise TypeError(
                f"configure() takes a TaskGuard, an AsyncTaskGuard or None, not {guard!r}"
            )


def default_guard() -> TaskGuard:
    """The default blocking guard, built from the environment on first use.
    Raises :class:`ConfigurationError` when only an AsyncTaskGuard was configured."""
    global _sync
    guard = _sync
    if guard is not None:
        return guard
    with _lock:
        if _sync is None:
            if _async is not None:
                raise ConfigurationError(
                    "a blocking handler needs a TaskGuard, but configure() was given only an "
                    "AsyncTaskGuard: configure(TaskGuard(...)) too"
                )
            _sync = TaskGuard.from_env()
        return _sync


def default_async_guard() -> Gatekeeper:
    """The guard for async handlers: the configured AsyncTaskGuard, else a configured
    TaskGuard, else an AsyncTaskGuard built from the environment."""
    global _async
    guard: Gatekeeper | None = _async or _sync
    if guard is not None:
        return guard
    with _lock:
        if _async is None and _sync is None:
            _async = AsyncTaskGuard.from_env()
        return _async or _sync  # type: ignore[return-value]


class _DefaultGates:
    """Routes each face operation to the default guard of the right kind."""

    def _gate(self, workid: object, on_error: OnError | str | None) -> tuple[TaskState, bool]:
        return default_guard()._gate(workid, on_error)

    async def _agate(
        self, workid: object, on_error: OnError | str | None
    ) -> tuple[TaskState, bool]:
        return await default_async_guard()._agate(workid, on_error)

    def _mark(self, wid: str) -> None:
        default_guard()._mark(wid)

    async def _amark(self, wid: str) -> None:
        await default_async_guard()._amark(wid)


_DEFAULT_GATES = _DefaultGates()

skip_if_closed = SkipIfClosed(_DEFAULT_GATES, sync_ok=True)
"""``@skip_if_closed`` on the process-wide default guard (see :func:`configure`)."""
