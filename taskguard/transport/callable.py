"""User transports: a function from the request dict to the response, sync or async.

A deployment whose connector is reached over a bus, an SDK or a test double
hands the guard a callable instead of a URL. :func:`as_sync_transport` and
:func:`as_async_transport` turn whatever the user passed into the transport
protocol of :mod:`taskguard.transport.base`, and the wrappers here translate
the function's exceptions into taskguard's error tree:

* a :class:`~taskguard.errors.TaskGuardError` passes through unchanged;
* ``TimeoutError``, ``ConnectionError``, ``OSError``: retryable :class:`TransportError`;
* any other ``Exception``: non-retryable :class:`TransportError` naming the function.

``asyncio.CancelledError`` and other ``BaseException`` s are never caught.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from taskguard.errors import ConfigurationError, ProtocolError, TaskGuardError, TransportError
from taskguard.transport.base import AsyncTransport, Request, ResponseBody, SyncTransport
from taskguard.transport.http import request_workid

__all__ = [
    "AsyncCallableTransport",
    "CallableTransport",
    "as_async_transport",
    "as_sync_transport",
]

_RETRYABLE = (OSError, asyncio.TimeoutError)  # TimeoutError and ConnectionError are OSErrors
_WHAT_A_TRANSPORT_IS = (
    "a transport is a callable taking the request dict and returning the response "
    "(a dict, JSON bytes or str), or an object with send(request, *, timeout) "
    "(asend for AsyncTaskGuard) and close()"
)


class CallableTransport:
    """A blocking transport that calls ``fn(request_dict)``.

    ``fn`` returns the response envelope as a dict, JSON bytes or str. The
    ``timeout`` cannot interrupt a blocking call: ``fn`` should bound its own
    I/O. Exceptions are translated as the module docstring says.
    """

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable[[Request], object]) -> None:
        self._fn = fn
        self._name = _describe(fn)

    def send(self, request: Request, *, timeout: float) -> ResponseBody:
        """Call the function with ``request``; ``timeout`` is not enforced (see class)."""
        try:
            result = self._fn(request)
        except TaskGuardError:
            raise
        except Exception as exc:
            raise _failure(exc, self._name, request) from exc
        return _checked(result, self._name, request)

    def close(self) -> None:
        """Nothing to release: the caller owns the function."""

    def __repr__(self) -> str:
        return f"CallableTransport({self._name})"


class AsyncCallableTransport:
    """An asyncio transport that calls ``fn(request_dict)`` and awaits the result.

    ``fn`` may be an ``async def``, a partial of one, an object with an
    ``async def __call__``, or a plain function (run on the event loop thread;
    if it returns an awaitable, that is awaited). Awaiting is bounded by
    ``timeout``: past it, a retryable :class:`TransportError`. Exceptions are
    translated as the module docstring says.
    """

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable[[Request], object]) -> None:
        self._fn = fn
        self._name = _describe(fn)

    async def asend(self, request: Request, *, timeout: float) -> ResponseBody:
        """Call the function with ``request`` and await its answer for ``timeout`` s."""
        try:
            result = self._fn(request)
            if inspect.isawaitable(result):
                result = await _bounded(result, timeout, self._name, request)
        except TaskGuardError:
            raise
        except Exception as exc:
            raise _failure(exc, self._name, request) from exc
        return _checked(result, self._name, request)

    async def aclose(self) -> None:
        """Nothing to release: the caller owns the function."""

    def __repr__(self) -> str:
        return f"AsyncCallableTransport({self._name})"


class _ThreadedTransport:
    """Runs a blocking transport's ``send`` in a worker thread for an asyncio guard."""

    __slots__ = ("_inner",)

    def __init__(self, inner: SyncTransport) -> None:
        self._inner = inner

    async def asend(self, request: Request, *, timeout: float) -> ResponseBody:
        return await asyncio.to_thread(
            functools.partial(self._inner.send, timeout=timeout), request
        )

    async def aclose(self) -> None:
        close = getattr(self._inner, "close", None)
        if callable(close):
            await asyncio.to_thread(close)

    def __repr__(self) -> str:
        return f"<{self._inner!r} in a worker thread>"


def as_sync_transport(obj: object) -> SyncTransport:
    """``obj`` as a blocking transport, for :class:`~taskguard.TaskGuard`.

    An object with ``send`` is used as is; a plain callable is wrapped in
    :class:`CallableTransport`. Raises :class:`ConfigurationError` for an async
    transport or callable, and for anything else.
    """
    send = getattr(obj, "send", None)
    if callable(send):
        if _is_async_callable(send):
            raise ConfigurationError(
                f"{type(obj).__qualname__}.send is a coroutine function; TaskGuard needs a "
                "blocking transport; use AsyncTaskGuard for an async one"
            )
        return cast(SyncTransport, obj)
    if callable(getattr(obj, "asend", None)) or (callable(obj) and _is_async_callable(obj)):
        raise ConfigurationError(
            f"{_describe(obj)} is async; TaskGuard needs a blocking transport; "
            "use AsyncTaskGuard for an async one"
        )
    if callable(obj):
        return CallableTransport(obj)
    raise ConfigurationError(f"cannot use {_describe(obj)} as a transport: {_WHAT_A_TRANSPORT_IS}")


def as_async_transport(obj: object) -> AsyncTransport:
    """``obj`` as an asyncio transport, for :class:`~taskguard.AsyncTaskGuard`.

    An object with ``asend`` is used as is; one with only a blocking ``send``
    runs it in a worker thread (``asyncio.to_thread``); a callable, sync or
    async, is wrapped in :class:`AsyncCallableTransport`. Raises
    :class:`ConfigurationError` for anything else.
    """
    if callable(getattr(obj, "asend", None)):
        return cast(AsyncTransport, obj)
    send = getattr(obj, "send", None)
    if callable(send):
        if _is_async_callable(send):
            raise ConfigurationError(
                f"{type(obj).__qualname__}.send is a coroutine function; name the async method "
                f"asend; {_WHAT_A_TRANSPORT_IS}"
            )
        return _ThreadedTransport(cast(SyncTransport, obj))
    if callable(obj):
        return AsyncCallableTransport(obj)
    raise ConfigurationError(f"cannot use {_describe(obj)} as a transport: {_WHAT_A_TRANSPORT_IS}")


if sys.version_info >= (3, 11):

    async def _bounded(
        awaitable: Awaitable[Any], timeout: float, name: str, request: Request
    ) -> Any:
        # asyncio.timeout cancels in place; wait_for would start a task per call.
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await awaitable
        except TimeoutError as exc:
            if deadline.expired():
                raise _timed_out(name, request, timeout) from exc
            raise

else:  # pragma: no cover - Python 3.10

    async def _bounded(
        awaitable: Awaitable[Any], timeout: float, name: str, request: Request
    ) -> Any:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError as exc:
            raise _timed_out(name, request, timeout) from exc


def _is_async_callable(obj: object) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's, not the instance's
    return not inspect.isroutine(obj) and inspect.iscoroutinefunction(call)


def _describe(fn: object) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_describe(fn.func)})"
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str) and (inspect.isroutine(fn) or inspect.isclass(fn)):
        module = getattr(fn, "__module__", None)
        return f"{module}.{name}" if module and module != "builtins" else name
    return f"a {type(fn).__qualname__} object"


def _failure(exc: Exception, name: str, request: Request) -> TransportError:
    workid = request_workid(request)
    return TransportError(
        f"transport {name} failed for workid {workid!r}: {type(exc).__name__}: {exc}",
        workid=workid,
        retryable=isinstance(exc, _RETRYABLE),
    )


def _timed_out(name: str, request: Request, timeout: float) -> TransportError:
    workid = request_workid(request)
    return TransportError(
        f"transport {name} gave no answer for workid {workid!r} within {timeout:g} s",
        workid=workid,
        retryable=True,
    )


def _checked(result: object, name: str, request: Request) -> ResponseBody:
    if type(result) is dict or isinstance(result, (bytes, str, Mapping)):
        return cast(ResponseBody, result)
    if isinstance(result, bytearray):
        return bytes(result)
    workid = request_workid(request)
    raise ProtocolError(
        f"transport {name} returned a {type(result).__name__} for workid {workid!r}; "
        "it must return the response envelope as a dict, JSON bytes or str",
        workid=workid,
        body=result,
    )
