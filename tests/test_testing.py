"""The reference CheckTaskState service: its answers, its counters, every fault,
and the promise that its faces (in-process sync/async, HTTP sync/async) behave
the same, because users' own tests rely on all of them."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from taskguard.errors import ProtocolError, ServiceError, TransportError
from taskguard.protocol import RequestFactory, read_answer
from taskguard.testing import FakeTaskStateService, run_server
from taskguard.transport.async_http import AiohttpTransport
from taskguard.transport.http import UrllibTransport

request = RequestFactory(source="tests")
SAMPLE = {
    "channel": "Salesforce",
    "topic": "Call",
    "subtopic": "CheckTaskState",
    "data": {"isClosed": True, "workid": "12345", "Success": True, "ErrorMessage": None},
}
Ask = Callable[..., bytes]


@pytest.fixture
def service() -> FakeTaskStateService:
    return FakeTaskStateService(closed=["12345"])


@pytest.fixture(params=["in-process", "in-process-async", "http", "http-async"])
def ask(request: pytest.FixtureRequest, service: FakeTaskStateService) -> Iterator[Ask]:
    """Send one CheckTaskState request for a workid through one face of the service."""
    face = request.param
    loop = asyncio.new_event_loop() if face.endswith("async") else None
    with service.serve() as running:
        transport: Any = service
        if face == "http":
            transport = UrllibTransport(running.url)
        elif face == "http-async":
            transport = AiohttpTransport(running.url)

        def send(workid: str, timeout: float = 2.0) -> bytes:
            req = RequestFactory(source="tests")(workid)
            if loop is None:
                return transport.send(req, timeout=timeout)  # type: ignore[no-any-return]
            return loop.run_until_complete(transport.asend(req, timeout=timeout))  # type: ignore[no-any-return]

        yield send
        if loop is None:
            transport.close()
        else:
            loop.run_until_complete(transport.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def test_a_closed_task_gets_exactly_the_seed_sample(service: FakeTaskStateService) -> None:
    reply = service.handle(json.dumps(request("12345")).encode(), {})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert json.loads(reply.body) == SAMPLE


def test_answers_echo_the_workid_as_a_string(ask: Ask, service: FakeTaskStateService) -> None:
    service.close(77)
    body = json.loads(ask("77"))
    assert body["data"]["workid"] == "77"
    assert body["data"]["isClosed"] is True
    assert read_answer(ask("open-one"), "open-one") is False


def test_channel_and_topic_are_the_services() -> None:
    service = FakeTaskStateService(channel="Genesys", topic="Email")
    body = json.loads(service.send(request("1"), timeout=1))
    assert (body["channel"], body["topic"]) == ("Genesys", "Email")


def test_close_reopen_and_is_closed(service: FakeTaskStateService) -> None:
    service.close("a", 7)
    assert service.is_closed("a")
    assert service.is_closed("7")
    assert service.is_closed(7)
    service.reopen("a")
    assert not service.is_closed("a")
    assert read_answer(service.send(request("a"), timeout=1), "a") is False
    service.close()  # no workids: the transport's close(), which changes nothing
    assert service.is_closed(7)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({**request("1"), "subtopic": "Other"}).encode(), "subtopic"),
        (json.dumps({**request("1"), "data": {}}).encode(), "workid"),
        (json.dumps({**request("1"), "data": {"workid": True}}).encode(), "workid"),
        (json.dumps({**request("1"), "source": ""}).encode(), "source"),
    ],
)
def test_a_bad_envelope_gets_400_with_success_false(
    service: FakeTaskStateService, body: bytes, problem: str
) -> None:
    reply = service.handle(body, {})
    data = json.loads(reply.body)["data"]
    assert reply.status == 400
    assert data["Success"] is False
    assert problem in data["ErrorMessage"]


def test_a_bad_envelope_in_process_is_a_service_error(service: FakeTaskStateService) -> None:
    with pytest.raises(ServiceError) as refused:
        service.send({**request("1"), "subtopic": "Other"}, timeout=1)
    assert refused.value.status == 400


def test_counters(service: FakeTaskStateService) -> None:
    service.fail_next(1)
    for workid in ("1", "1", "2"):
        with contextlib.suppress(TransportError):
            service.send(request(workid), timeout=1)
    service.handle(b"garbage", {})
    assert service.requests == 4  # faulted and malformed requests count too
    assert (service.requests_for("1"), service.requests_for(2), service.requests_for("3")) == (
        2,
        1,
        0,
    )
    service.reset_counts()
    assert service.requests == 0
    assert service.requests_for("1") == 0


def test_fail_next_fails_n_requests_then_answers(ask: Ask, service: FakeTaskStateService) -> None:
    service.fail_next(2, status=503, retry_after=1.5)
    for _ in range(2):
        with pytest.raises(TransportError) as failed:
            ask("12345")
        assert failed.value.retryable
        assert (failed.value.status, failed.value.retry_after) == (503, 1.5)
    assert read_answer(ask("12345"), "12345") is True
    assert service.requests_for("12345") == 3


def test_a_4xx_fault_is_a_service_error(ask: Ask, service: FakeTaskStateService) -> None:
    service.fail_next(1, status=404)
    with pytest.raises(ServiceError) as refused:
        ask("1")
    assert refused.value.status == 404


def test_timeout_next_holds_the_request(ask: Ask, service: FakeTaskStateService) -> None:
    service.timeout_next(1)
    started = time.monotonic()
    with pytest.raises(TransportError) as failed:
        ask("12345", timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 1.5
    assert failed.value.retryable
    assert read_answer(ask("12345"), "12345") is True


def test_error_next_answers_success_false(ask: Ask, service: FakeTaskStateService) -> None:
    service.error_next(1, message="the CRM is down")
    with pytest.raises(ServiceError) as refused:
        read_answer(ask("12345"), "12345")
    assert refused.value.error_message == "the CRM is down"


def test_malformed_next_sends_the_body_as_is(ask: Ask, service: FakeTaskStateService) -> None:
    service.malformed_next(1)
    service.malformed_next(1, body="[]")
    assert ask("1") == b"{not json"
    assert ask("1") == b"[]"
    with pytest.raises(ProtocolError):
        read_answer(b"{not json", "1")


def test_wrong_workid_next_answers_about_another_task(
    ask: Ask, service: FakeTaskStateService
) -> None:
    service.wrong_workid_next(1)
    with pytest.raises(ProtocolError, match=r"another|asked about"):
        read_answer(ask("12345"), "12345")


def test_latency_delays_every_answer(ask: Ask, service: FakeTaskStateService) -> None:
    service.latency = 0.1
    started = time.monotonic()
    assert read_answer(ask("12345"), "12345") is True
    assert time.monotonic() - started >= 0.09
    service.latency = 0.5
    with pytest.raises(TransportError) as failed:
        ask("12345", timeout=0.2)
    assert failed.value.retryable


def test_faults_queue_in_call_order(service: FakeTaskStateService) -> None:
    service.error_next(1)
    service.fail_next(1, status=502)
    service.malformed_next(1)
    with pytest.raises(ServiceError):
        read_answer(service.send(request("1"), timeout=1), "1")
    with pytest.raises(TransportError, match="502"):
        service.send(request("1"), timeout=1)
    assert service.send(request("1"), timeout=1) == b"{not json"
    assert read_answer(service.send(request("1"), timeout=1), "1") is False


def test_clear_faults_restores_normal_service(service: FakeTaskStateService) -> None:
    service.fail_next(5)
    service.set_fault_rates(error_rate=1.0)
    service.latency = 3
    service.clear_faults()
    assert service.latency == 0
    assert read_answer(service.send(request("12345"), timeout=1), "12345") is True


def test_fault_rates_are_random_but_reproducible(service: FakeTaskStateService) -> None:
    def outcomes() -> list[str]:
        service.set_fault_rates(error_rate=0.3, timeout_rate=0.2, status=502, seed=7, hang=0)
        seen = []
        for _ in range(300):
            try:
                service.send(request("1"), timeout=0.001)
                seen.append("ok")
            except TransportError as exc:
                seen.append("error" if exc.status == 502 else "timeout")
        return seen

    first = outcomes()
    assert first == outcomes()
    assert 60 <= first.count("error") <= 120
    assert 30 <= first.count("timeout") <= 90


def test_bad_fault_settings_are_refused(service: FakeTaskStateService) -> None:
    bad_settings: list[Callable[[], object]] = [
        lambda: service.fail_next(-1),
        lambda: service.fail_next(1, status=200),
        lambda: service.timeout_next(1, hang=-1),
        lambda: service.set_fault_rates(error_rate=0.7, timeout_rate=0.7),
        lambda: setattr(service, "latency", float("nan")),
    ]
    for bad in bad_settings:
        with pytest.raises(ValueError, match="must"):
            bad()


def test_http_requires_the_token_and_in_process_is_trusted() -> None:
    service = FakeTaskStateService(closed=["1"], require_token="tok")
    assert read_answer(service.send(request("1"), timeout=1), "1") is True
    with service.serve() as running:
        for token in ("tok", "bad", None):
            transport = UrllibTransport(running.url, auth_token=token)
            if token == "tok":
                assert read_answer(transport.send(request("1"), timeout=2), "1") is True
            else:
                with pytest.raises(ServiceError) as refused:
                    transport.send(request("1"), timeout=2)
                assert refused.value.status == 401
            transport.close()


def test_counts_are_exact_under_concurrent_requests(service: FakeTaskStateService) -> None:
    service.fail_next(100)
    with service.serve() as running:
        transport = UrllibTransport(running.url, maxsize=16)

        def one(n: int) -> bool:
            via = transport if n % 2 else service  # HTTP threads and in-process callers mixed
            try:
                via.send(request(str(n % 10)), timeout=5)
            except TransportError:
                return False
            return True

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(800)))
        transport.close()
    assert results.count(False) == 100  # each scripted fault was used exactly once
    assert service.requests == 800
    assert all(service.requests_for(str(d)) == 80 for d in range(10))


def test_any_post_path_answers_and_the_url_is_loopback(service: FakeTaskStateService) -> None:
    with service.serve() as running:
        assert running.url == f"http://127.0.0.1:{running.port}/checktaskstate"
        assert running.host == "127.0.0.1"
        conn = http.client.HTTPConnection(running.host, running.port, timeout=2)
        conn.request("POST", "/anything/else", body=json.dumps(request("12345")))
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == SAMPLE
        conn.close()


def test_leaving_serve_does_not_wait_for_held_requests(service: FakeTaskStateService) -> None:
    service.timeout_next(1, hang=30)
    with service.serve() as running:
        conn = http.client.HTTPConnection(running.host, running.port, timeout=10)
        held = threading.Thread(target=lambda: _post_ignoring_errors(conn), daemon=True)
        held.start()
        while service.requests == 0:
            time.sleep(0.01)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    held.join(2)
    assert not held.is_alive()  # the held client saw the connection close
    conn.close()


def _post_ignoring_errors(conn: http.client.HTTPConnection) -> None:
    try:
        conn.request("POST", "/", body=json.dumps(request("1")))
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass


def test_run_server_serves_until_ctrl_c() -> None:
    answers: list[bytes] = []
    done = threading.Event()

    def ready(url: str) -> None:
        def client() -> None:
            transport = UrllibTransport(url)
            try:
                answers.append(transport.send(request("C9"), timeout=2))
            finally:
                transport.close()
                done.set()
                _thread.interrupt_main()  # what Ctrl-C does to the foreground server

        threading.Thread(target=client, daemon=True).start()

    try:
        run_server("127.0.0.1", 0, ["C9"], on_ready=ready)
    except KeyboardInterrupt:  # pragma: no cover - only if run_server let Ctrl-C escape
        pytest.fail("run_server let KeyboardInterrupt escape")
    assert done.is_set()
    assert read_answer(answers[0], "C9") is True
