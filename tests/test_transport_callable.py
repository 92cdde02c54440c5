"""User transports: a function (sync or async) or a transport object, turned into
what each guard needs, with the function's failures translated."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any

import pytest

from taskguard.errors import (
    ConfigurationError,
    ProtocolError,
    ServiceError,
    TaskGuardError,
    TransportError,
)
from taskguard.protocol import RequestFactory, read_answer
from taskguard.testing import FakeTaskStateService
from taskguard.transport.callable import (
    AsyncCallableTransport,
    CallableTransport,
    as_async_transport,
    as_sync_transport,
)

request = RequestFactory(source="tests")


def answer(req: dict[str, Any]) -> dict[str, Any]:
    data = {"isClosed": True, "workid": req["data"]["workid"], "Success": True}
    return {"subtopic": "CheckTaskState", "data": {**data, "ErrorMessage": None}}


def raising(exc: BaseException) -> Any:
    def fn(req: dict[str, Any]) -> Any:
        raise exc

    return fn


@pytest.mark.parametrize(
    "result", [answer(request("1")), b'{"a": 1}', '{"a": 1}'], ids=["dict", "bytes", "str"]
)
def test_sync_function_answers_are_returned_as_given(result: object) -> None:
    seen: list[dict[str, Any]] = []

    def fn(req: dict[str, Any]) -> object:
        seen.append(req)
        return result

    assert CallableTransport(fn).send(request("1"), timeout=1) == result
    assert seen == [request("1")]


def test_taskguard_errors_pass_through_unchanged() -> None:
    refusal = ServiceError("no", workid="1", error_message="no")
    with pytest.raises(ServiceError) as raised:
        CallableTransport(raising(refusal)).send(request("1"), timeout=1)
    assert raised.value is refusal


@pytest.mark.parametrize(
    "exc", [TimeoutError("slow"), ConnectionResetError("reset"), OSError("disk")]
)
def test_io_failures_are_retryable(exc: Exception) -> None:
    with pytest.raises(TransportError) as failed:
        CallableTransport(raising(exc)).send(request("31"), timeout=1)
    assert failed.value.retryable
    assert failed.value.workid == "31"
    assert failed.value.__cause__ is exc


def test_other_failures_are_not_retryable_and_name_the_function() -> None:
    def flaky_bus_call(req: dict[str, Any]) -> Any:
        raise KeyError("topic")

    with pytest.raises(TransportError, match="flaky_bus_call") as failed:
        CallableTransport(flaky_bus_call).send(request("9"), timeout=1)
    assert not failed.value.retryable
    assert isinstance(failed.value.__cause__, KeyError)


def test_a_wrong_return_type_is_a_protocol_error_naming_the_function() -> None:
    def forgot_to_return(req: dict[str, Any]) -> None:
        pass

    with pytest.raises(ProtocolError, match=r"forgot_to_return.*NoneType"):
        CallableTransport(forgot_to_return).send(request("9"), timeout=1)


def test_close_leaves_the_users_function_alone() -> None:
    class Bus:
        closed = False

        def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
            return answer(req)

        def close(self) -> None:
            self.closed = True

    bus = Bus()
    CallableTransport(bus).close()
    assert not bus.closed


async def async_fn(req: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return answer(req)


async def async_fn_with_options(req: dict[str, Any], *, delay: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    return answer(req)


class AsyncCallable:
    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        return answer(req)


def sync_returning_awaitable(req: dict[str, Any]) -> Any:
    return async_fn(req)


ASYNC_KINDS = {
    "async def": async_fn,
    "partial": functools.partial(async_fn_with_options, delay=0),
    "async __call__": AsyncCallable(),
    "plain def": answer,
    "def returning a coroutine": sync_returning_awaitable,
}


@pytest.mark.parametrize("fn", ASYNC_KINDS.values(), ids=ASYNC_KINDS.keys())
async def test_every_kind_of_callable_works_on_the_async_side(fn: Any) -> None:
    transport = as_async_transport(fn)
    assert isinstance(transport, AsyncCallableTransport)
    assert read_answer(await transport.asend(request("5"), timeout=1), "5") is True


async def test_the_async_timeout_is_enforced() -> None:
    transport = AsyncCallableTransport(functools.partial(async_fn_with_options, delay=10))
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"within 0\.05 s") as failed:
        await transport.asend(request("5"), timeout=0.05)
    assert time.monotonic() - started < 1
    assert failed.value.retryable
    assert failed.value.workid == "5"


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [(asyncio.TimeoutError(), True), (ConnectionRefusedError(), True), (ValueError(), False)],
)
async def test_async_failures_are_translated(exc: Exception, retryable: bool) -> None:
    async def fn(req: dict[str, Any]) -> Any:
        raise exc

    with pytest.raises(TransportError) as failed:
        await AsyncCallableTransport(fn).asend(request("5"), timeout=1)
    assert failed.value.retryable is retryable
    assert failed.value.__cause__ is exc


async def test_async_taskguard_errors_pass_through() -> None:
    refusal = ProtocolError("bad", workid="5")

    async def fn(req: dict[str, Any]) -> Any:
        raise refusal

    with pytest.raises(ProtocolError) as raised:
        await AsyncCallableTransport(fn).asend(request("5"), timeout=1)
    assert raised.value is refusal


async def test_cancellation_is_never_swallowed() -> None:
    started = asyncio.Event()

    async def slow(req: dict[str, Any]) -> Any:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(AsyncCallableTransport(slow).asend(request("5"), timeout=5))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def cancelled(req: dict[str, Any]) -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await AsyncCallableTransport(cancelled).asend(request("5"), timeout=1)


def test_as_sync_transport_keeps_transport_objects_and_wraps_functions() -> None:
    service = FakeTaskStateService()
    assert as_sync_transport(service) is service
    assert isinstance(as_sync_transport(answer), CallableTransport)


@pytest.mark.parametrize(
    "fn",
    [async_fn, functools.partial(async_fn_with_options, delay=0), AsyncCallable()],
    ids=["async def", "partial", "async __call__"],
)
def test_as_sync_transport_refuses_async_callables(fn: Any) -> None:
    with pytest.raises(ConfigurationError, match="use AsyncTaskGuard"):
        as_sync_transport(fn)


def test_as_sync_transport_refuses_async_transport_objects() -> None:
    class OnlyAsync:
        async def asend(self, req: dict[str, Any], *, timeout: float) -> Any:
            return answer(req)

    class AsyncSend:
        async def send(self, req: dict[str, Any], *, timeout: float) -> Any:
            return answer(req)

    for obj in (OnlyAsync(), AsyncSend()):
        with pytest.raises(ConfigurationError, match="AsyncTaskGuard"):
            as_sync_transport(obj)


@pytest.mark.parametrize("obj", [None, 42, "http://x"])
def test_what_is_not_a_transport_is_explained(obj: object) -> None:
    for convert in (as_sync_transport, as_async_transport):
        with pytest.raises(ConfigurationError, match="a transport is a callable") as refused:
            convert(obj)
        assert isinstance(refused.value, TaskGuardError)


async def test_as_async_transport_runs_a_blocking_send_in_a_worker_thread() -> None:
    threads: list[int] = []

    class Blocking:
        def send(self, req: dict[str, Any], *, timeout: float) -> dict[str, Any]:
            threads.append(threading.get_ident())
            return answer(req)

        def close(self) -> None:
            threads.append(-1)

    transport = as_async_transport(Blocking())
    assert read_answer(await transport.asend(request("3"), timeout=1), "3") is True
    assert threads[0] != threading.get_ident()  # the loop's thread was never blocked
    await transport.aclose()
    assert threads[-1] == -1


async def test_as_async_transport_keeps_async_transport_objects() -> None:
    service = FakeTaskStateService(closed=["4"])
    assert as_async_transport(service) is service
    assert read_answer(await as_async_transport(service).asend(request("4"), timeout=1), "4")
