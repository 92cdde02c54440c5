"""The HTTP transports against real loopback servers: what reaches the service,
what comes back, and how every failure is reported. Each behaviour is checked
on both halves (urllib3 and aiohttp), through one small client wrapper."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from taskguard.errors import ConfigurationError, ProtocolError, ServiceError, TransportError
from taskguard.protocol import RequestFactory, read_answer
from taskguard.testing import FakeTaskStateService, RunningService
from taskguard.transport.async_http import AiohttpTransport
from taskguard.transport.http import (
    UrllibTransport,
    parse_retry_after,
    request_workid,
)

TOKEN = "s3cret-token-value"
LIMIT = 4096
request = RequestFactory(source="tests")


class Client:
    """One transport of either kind, driven synchronously."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "urllib3":
            self.transport: Any = UrllibTransport(url, **options)
        else:
            self.transport = AiohttpTransport(url, **options)
            self.loop = asyncio.new_event_loop()

    def send(self, req: dict[str, Any], timeout: float = 2.0) -> bytes:
        if self.loop is None:
            return self.transport.send(req, timeout=timeout)  # type: ignore[no-any-return]
        return self.loop.run_until_complete(self.transport.asend(req, timeout=timeout))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.loop is None:
            self.transport.close()
        else:
            self.loop.run_until_complete(self.transport.aclose())

    def dispose(self) -> None:
        self.close()
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


@pytest.fixture(params=["urllib3", "aiohttp"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(url: str, **options: Any) -> Client:
        clients.append(Client(request.param, url, **options))
        return clients[-1]

    yield make
    for client in clients:
        client.dispose()


@pytest.fixture
def service() -> FakeTaskStateService:
    return FakeTaskStateService(closed=["12345"])


@pytest.fixture
def running(service: FakeTaskStateService) -> Iterator[RunningService]:
    with service.serve() as running:
        yield running


def answer(workid: str) -> bytes:
    data = {"isClosed": True, "workid": workid, "Success": True, "ErrorMessage": None}
    return json.dumps({"subtopic": "CheckTaskState", "data": data}).encode()


class Scripted(ThreadingHTTPServer):
    """A tiny server whose answer each test writes by hand; it records request headers."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.seen: list[dict[str, str]] = []
        self.respond: Callable[[BaseHTTPRequestHandler, str], None] = ok
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/checktaskstate"


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Scripted

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        try:
            self.server.respond(self, str(json.loads(body)["data"]["workid"]))
        except OSError:  # the client hung up on purpose (a refused answer)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def ok(handler: BaseHTTPRequestHandler, workid: str) -> None:
    body = answer(workid)
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def chunked(pieces: Iterator[bytes]) -> Callable[[BaseHTTPRequestHandler, str], None]:
    def respond(handler: BaseHTTPRequestHandler, workid: str) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for piece in pieces:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\n\r\n")

    return respond


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_returns_the_answer_body(connect: Callable[..., Client], running: RunningService) -> None:
    client = connect(running.url)
    assert read_answer(client.send(request("12345")), "12345") is True
    assert read_answer(client.send(request("777")), "777") is False


def test_sends_json_and_a_bearer_token_only_when_set(
    connect: Callable[..., Client], scripted: Scripted
) -> None:
    connect(scripted.url).send(request("1"))
    connect(scripted.url, auth_token=TOKEN).send(request("2"))
    without, with_token = scripted.seen
    assert without["content-type"] == "application/json"
    assert without["accept"] == "application/json"
    assert without["user-agent"].startswith("taskguard/")
    assert "authorization" not in without
    assert with_token["authorization"] == f"Bearer {TOKEN}"


def test_the_service_accepts_the_right_token(connect: Callable[..., Client]) -> None:
    service = FakeTaskStateService(closed=["9"], require_token=TOKEN)
    with service.serve() as running:
        assert read_answer(connect(running.url, auth_token=TOKEN).send(request("9")), "9")
        with pytest.raises(ServiceError) as refused:
            connect(running.url, auth_token="wrong").send(request("9"))
    assert refused.value.status == 401
    assert refused.value.workid == "9"
    assert "auth_token" in str(refused.value)
    assert "registration" in str(refused.value)


def test_403_says_to_check_the_token_and_registration(
    connect: Callable[..., Client], running: RunningService, service: FakeTaskStateService
) -> None:
    service.fail_next(1, status=403)
    with pytest.raises(ServiceError, match="auth_token") as refused:
        connect(running.url).send(request("5"))
    assert refused.value.status == 403


@pytest.mark.parametrize(("status", "retry_after"), [(503, 2.5), (429, 7.0), (500, None)])
def test_5xx_and_429_are_retryable_with_retry_after(
    connect: Callable[..., Client],
    running: RunningService,
    service: FakeTaskStateService,
    status: int,
    retry_after: float | None,
) -> None:
    service.fail_next(1, status=status, retry_after=retry_after)
    client = connect(running.url)
    with pytest.raises(TransportError) as failed:
        client.send(request("42"))
    error = failed.value
    assert (error.retryable, error.status, error.retry_after, error.workid) == (
        True,
        status,
        retry_after,
        "42",
    )
    assert "'42'" in str(error)
    assert read_answer(client.send(request("42")), "42") is False  # the connection still works


def test_retry_after_as_an_http_date(connect: Callable[..., Client], scripted: Scripted) -> None:
    def unavailable(handler: BaseHTTPRequestHandler, workid: str) -> None:
        handler.send_response(503)
        handler.send_header("Retry-After", email.utils.formatdate(time.time() + 30, usegmt=True))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    scripted.respond = unavailable
    with pytest.raises(TransportError) as failed:
        connect(scripted.url).send(request("1"))
    assert failed.value.retryable
    assert failed.value.retry_after is not None
    assert 28 <= failed.value.retry_after <= 30


def test_parse_retry_after_reads_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) == 60.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    for unusable in (None, "", "-3", "nan", "soon", "Mon, 99 Foo 2020"):
        assert parse_retry_after(unusable) is None


@pytest.mark.parametrize("status", [400, 404, 409])
def test_other_4xx_is_a_service_error(
    connect: Callable[..., Client],
    running: RunningService,
    service: FakeTaskStateService,
    status: int,
) -> None:
    service.fail_next(1, status=status)
    with pytest.raises(ServiceError) as refused:
        connect(running.url).send(request("8"))
    assert refused.value.status == status
    assert not isinstance(refused.value, TransportError)


def test_connection_refused_is_retryable(connect: Callable[..., Client]) -> None:
    url = f"http://127.0.0.1:{free_port()}/checktaskstate"
    with pytest.raises(TransportError) as failed:
        connect(url).send(request("77"))
    assert failed.value.retryable
    assert failed.value.workid == "77"
    assert failed.value.__cause__ is not None


def test_a_malformed_request_still_gets_a_clean_error(connect: Callable[..., Client]) -> None:
    url = f"http://127.0.0.1:{free_port()}/checktaskstate"
    with pytest.raises(TransportError) as failed:
        connect(url).send({"data": None})
    assert failed.value.workid is None
    assert request_workid({"data": {"workid": 12}}) == "12"
    assert request_workid(["not", "a", "dict"]) is None


def test_a_read_timeout_is_retryable_and_prompt(
    connect: Callable[..., Client], running: RunningService, service: FakeTaskStateService
) -> None:
    service.timeout_next(1)
    client = connect(running.url)
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"within 0\.3 s") as failed:
        client.send(request("3"), timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 1.5
    assert failed.value.retryable
    assert read_answer(client.send(request("3")), "3") is False


def test_a_too_large_content_length_is_refused_at_once(
    connect: Callable[..., Client], scripted: Scripted
) -> None:
    def huge(handler: BaseHTTPRequestHandler, workid: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "50000000")
        handler.end_headers()
        handler.wfile.write(b"x" * 1000)
        scripted.stop.wait(10)  # the rest never comes: reading it would time out

    scripted.respond = huge
    client = connect(scripted.url, max_response_bytes=LIMIT)
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="max_response_bytes") as refused:
        client.send(request("6"), timeout=5)
    assert time.monotonic() - started < 2
    assert refused.value.workid == "6"
    scripted.respond = ok
    assert read_answer(client.send(request("6")), "6") is True  # the pool was not poisoned


def test_an_endless_chunked_answer_is_refused_past_the_limit(
    connect: Callable[..., Client], scripted: Scripted
) -> None:
    def endless() -> Iterator[bytes]:
        while not scripted.stop.is_set():
            yield b"y" * 1024

    scripted.respond = chunked(endless())
    client = connect(scripted.url, max_response_bytes=LIMIT)
    with pytest.raises(ProtocolError, match="max_response_bytes"):
        client.send(request("6"), timeout=5)
    scripted.respond = ok
    assert read_answer(client.send(request("6")), "6") is True


def test_a_small_chunked_answer_is_returned(
    connect: Callable[..., Client], scripted: Scripted
) -> None:
    body = answer("4")
    scripted.respond = chunked(iter([body[:10], body[10:]]))
    assert connect(scripted.url, max_response_bytes=LIMIT).send(request("4")) == body


def test_the_token_never_shows(
    connect: Callable[..., Client], service: FakeTaskStateService
) -> None:
    errors: list[Exception] = []
    with service.serve() as running:
        client = connect(running.url, auth_token=TOKEN)
        for status in (503, 401):
            service.fail_next(1, status=status)
            with pytest.raises((TransportError, ServiceError)) as failed:
                client.send(request("1"))
            errors.append(failed.value)
    with pytest.raises(TransportError) as refused:
        client.send(request("1"))  # the server is gone
    errors.append(refused.value)
    shown = [repr(client.transport), str(client.transport)]
    shown += [text for e in errors for text in (str(e), repr(e), repr(e.__cause__))]
    assert not [text for text in shown if TOKEN in text]
    assert running.url in repr(client.transport)


def test_a_password_in_the_url_is_not_shown(connect: Callable[..., Client]) -> None:
    client = connect("http://user:hunter2@127.0.0.1:1/checktaskstate")
    assert "hunter2" not in repr(client.transport)


def test_a_closed_transport_refuses_to_send(
    connect: Callable[..., Client], running: RunningService
) -> None:
    client = connect(running.url)
    client.send(request("1"))
    client.close()
    with pytest.raises(TransportError, match="closed") as failed:
        client.send(request("1"))
    assert not failed.value.retryable


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "http:///nohost"])
def test_a_bad_url_is_a_configuration_error(connect: Callable[..., Client], url: str) -> None:
    with pytest.raises(ConfigurationError):
        connect(url)


def test_sync_transport_serves_many_threads(
    running: RunningService, service: FakeTaskStateService
) -> None:
    transport = UrllibTransport(running.url, maxsize=8)
    workids = [str(n) for n in range(200)]
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda w: transport.send(request(w), timeout=5), workids))
    transport.close()
    assert [json.loads(b)["data"]["workid"] for b in bodies] == workids
    assert service.requests == 200


async def test_async_transport_serves_many_coroutines(
    running: RunningService, service: FakeTaskStateService
) -> None:
    transport = AiohttpTransport(running.url, maxsize=10)
    workids = [str(n) for n in range(200)]
    bodies = await asyncio.gather(*(transport.asend(request(w), timeout=5) for w in workids))
    await transport.aclose()
    assert [json.loads(b)["data"]["workid"] for b in bodies] == workids
    assert service.requests == 200


def test_async_transport_built_without_a_loop_works_in_two_loops(
    running: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    transport = AiohttpTransport(running.url)  # no running loop here, as at import time

    async def ask() -> bool:
        return read_answer(await transport.asend(request("12345"), timeout=2), "12345")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(ask()) is True
        assert asyncio.run(ask()) is True  # a fresh session for the second loop
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert "Unclosed" not in caplog.text


def test_missing_aiohttp_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # makes `import aiohttp` fail
    with pytest.raises(ConfigurationError) as missing:
        AiohttpTransport("http://127.0.0.1:1/x")
    message = str(missing.value)
    assert "pip install 'taskguard[async]'" in message
    assert "transport=" in message
    assert "\n" not in message


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    try:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return folder


def test_tls_is_verified_by_default(
    connect: Callable[..., Client], scripted: Scripted, certificate: Path
) -> None:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    scripted.socket = context.wrap_socket(scripted.socket, server_side=True)
    url = scripted.url.replace("http:", "https:")
    with pytest.raises(TransportError, match="ca_certs") as untrusted:
        connect(url).send(request("1"))
    assert not untrusted.value.retryable  # another attempt cannot make the certificate valid
    trusted = connect(url, ca_certs=str(certificate / "cert.pem"))
    assert read_answer(trusted.send(request("1")), "1") is True
