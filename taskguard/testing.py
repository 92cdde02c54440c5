"""A reference CheckTaskState service, for your own tests and for demos.

:class:`FakeTaskStateService` answers like the connector (DESIGN section 1) and
misbehaves on demand. Its three faces behave identically, because each one
sends what :meth:`~FakeTaskStateService.handle` decides: in-process (the
service is itself a transport: ``TaskGuard(transport=service)``), over HTTP in
a background thread (``with service.serve() as running:``, then
``service_url=running.url``), and over HTTP in the foreground
(:func:`run_server`, behind ``taskguard serve``).

Scripted faults (``fail_next``, ``timeout_next``, ``error_next``,
``malformed_next``, ``wrong_workid_next``) queue up in call order; each one
applies to the next request received, whatever it asks. Everything is thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import random
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any

from taskguard.errors import TransportError
from taskguard.protocol import SUBTOPIC
from taskguard.transport.base import Request
from taskguard.transport.http import parse_retry_after, request_workid, status_error

__all__ = ["FakeTaskStateService", "Reply", "RunningService", "run_server"]

_encode = json.JSONEncoder(separators=(",", ":")).encode
_JSON: Mapping[str, str] = MappingProxyType({"Content-Type": "application/json"})
_PATH = "/checktaskstate"


@dataclass(frozen=True)
class Reply:
    """What the service answers to one request, before any I/O.

    ``delay`` is the latency to wait before answering. ``hang`` is set for a
    timeout fault: hold the request that long and never answer.
    """

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: _JSON)
    delay: float = 0.0
    hang: float | None = None


@dataclass(frozen=True)
class RunningService:
    """Where :meth:`FakeTaskStateService.serve` listens."""

    url: str
    host: str
    port: int


class FakeTaskStateService:
    """A CheckTaskState service that remembers which workids are closed.

    ``closed`` are the workids closed from the start; ``channel`` and
    ``topic`` go into every answer; with ``require_token``, HTTP requests
    without ``Authorization: Bearer <token>`` get a 401 (in-process calls are
    trusted). A request that is not a CheckTaskState envelope gets a 400.
    """

    def __init__(
        self,
        closed: Iterable[str | int] = (),
        *,
        channel: str = "Salesforce",
        topic: str = "Call",
        require_token: str | None = None,
    ) -> None:
        self._head = {"channel": channel, "topic": topic, "subtopic": SUBTOPIC}
        self._token = require_token or None
        self._lock = threading.Lock()
        self._closed = {str(w) for w in closed}
        self._total = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._script: collections.deque[tuple[str, Any]] = collections.deque()
        self._latency = 0.0
        self._rates: tuple[float, float, int, float] | None = None
        self._rng = random.Random()

    def close(self, *workids: str | int) -> None:
        """Mark tasks closed: later answers say ``isClosed: true``.

        Called with no workids it does nothing, which makes it the transport's
        ``close()`` too: there is nothing to release.
        """
        with self._lock:
            self._closed.update(str(w) for w in workids)

    def reopen(self, *workids: str | int) -> None:
        """Mark tasks open again (a real connector never does; tests may)."""
        with self._lock:
            self._closed.difference_update(str(w) for w in workids)

    def is_closed(self, workid: str | int) -> bool:
        """Whether the service would answer ``isClosed: true`` for ``workid``."""
        with self._lock:
            return str(workid) in self._closed

    @property
    def requests(self) -> int:
        """Requests received, faulted and malformed ones included."""
        with self._lock:
            return self._total

    def requests_for(self, workid: str | int) -> int:
        """Requests received that named ``workid``."""
        with self._lock:
            return self._counts[str(workid)]

    def reset_counts(self) -> None:
        """Set every request counter back to zero."""
        with self._lock:
            self._total = 0
            self._counts.clear()

    @property
    def latency(self) -> float:
        """Seconds every answer waits before it is sent."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = _non_negative(seconds, "latency")

    def fail_next(self, n: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests with HTTP ``status`` (and ``Retry-After``)."""
        if retry_after is not None:
            _non_negative(retry_after, "retry_after")
        self._queue(n, ("status", (_error_status(status), retry_after)))

    def timeout_next(self, n: int, hang: float = 30.0) -> None:
        """Never answer the next ``n`` requests: hold each ``hang`` s (HTTP: or until
        shutdown; in-process: ``min(hang, timeout)``, then a retryable TransportError)."""
        self._queue(n, ("timeout", _non_negative(hang, "hang")))

    def error_next(self, n: int, message: str = "the task state could not be read") -> None:
        """Answer the next ``n`` requests with ``Success: false`` and ``message``."""
        self._queue(n, ("error", message))

    def malformed_next(self, n: int, body: bytes | str = b"{not json") -> None:
        """Answer the next ``n`` requests with HTTP 200 and ``body`` as is."""
        self._queue(n, ("malformed", body.encode() if isinstance(body, str) else bytes(body)))

    def wrong_workid_next(self, n: int) -> None:
        """Answer the next ``n`` requests about another workid than the one asked."""
        self._queue(n, ("wrong_workid", None))

    def set_fault_rates(
        self,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        *,
        status: int = 503,
        seed: int | None = None,
        hang: float = 30.0,
    ) -> None:
        """Fail requests at random: ``error_rate`` of them with HTTP ``status``,
        ``timeout_rate`` with a timeout (held ``hang`` s). Scripted faults go first."""
        if not (0 <= error_rate <= 1 and 0 <= timeout_rate <= 1 and error_rate + timeout_rate <= 1):
            raise ValueError("error_rate and timeout_rate must be within 0..1 and sum to <= 1")
        rates = (error_rate, timeout_rate, _error_status(status), _non_negative(hang, "hang"))
        with self._lock:
            self._rates = rates
            self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        """Drop scripted faults and fault rates, and set ``latency`` back to 0."""
        with self._lock:
            self._script.clear()
            self._rates = None
            self._latency = 0.0

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Count one request and decide the reply; every face sends what this returns."""
        workid, problem = _read_request(body)
        with self._lock:
            self._total += 1
            if workid is not None:
                self._counts[workid] += 1
            fault = self._next_fault()
            closed = workid in self._closed
            delay = self._latency
        if fault is not None:
            reply = self._fault(fault, workid)
        elif self._token is not None and not _authorized(headers, self._token):
            reply = self._refusal(401, workid, "missing or wrong bearer token")
        elif problem is not None:
            reply = self._refusal(400, workid, problem)
        else:
            reply = Reply(200, self._envelope({"isClosed": closed, "workid": workid}))
        return replace(reply, delay=delay) if delay else reply

    def _next_fault(self) -> tuple[str, Any] | None:  # called with the lock held
        if self._script:
            return self._script.popleft()
        if self._rates is None:
            return None
        error_rate, timeout_rate, status, hang = self._rates
        draw = self._rng.random()
        if draw < error_rate:
            return ("status", (status, None))
        if draw < error_rate + timeout_rate:
            return ("timeout", hang)
        return None

    def _fault(self, fault: tuple[str, Any], workid: str | None) -> Reply:
        kind, arg = fault
        if kind == "status":
            status, retry_after = arg
            reply = self._refusal(status, workid, f"injected failure (HTTP {status})")
            if retry_after is not None:
                reply = replace(reply, headers={**_JSON, "Retry-After": f"{retry_after:g}"})
            return reply
        if kind == "timeout":
            return Reply(504, b"", hang=arg)
        if kind == "error":
            return self._refusal(200, workid, arg)
        if kind == "malformed":
            return Reply(200, arg)
        other = f"{workid or 0}-other"
        return Reply(200, self._envelope({"isClosed": False, "workid": other}))

    def _refusal(self, status: int, workid: str | None, message: str) -> Reply:
        return Reply(status, self._envelope({"workid": workid}, message))

    def _envelope(self, data: dict[str, Any], error: str | None = None) -> bytes:
        data["Success"] = error is None
        data["ErrorMessage"] = error
        return _encode({**self._head, "data": data}).encode()

    def _queue(self, n: int, fault: tuple[str, Any]) -> None:
        if type(n) is not int or n < 0:
            raise ValueError(f"n must be a non-negative int, not {n!r}")
        with self._lock:
            self._script.extend([fault] * n)

    def send(self, request: Request, *, timeout: float) -> bytes:
        """Answer ``request`` in-process, as the HTTP transport would report it.

        Raises :class:`TransportError` (retryable) for 5xx, 429 and timeouts,
        :class:`~taskguard.errors.ServiceError` for other 4xx.
        """
        reply = self._in_process(request)
        wait, timed_out = _wait(reply, timeout)
        if wait > 0:
            time.sleep(wait)
        return _outcome(reply, request, timed_out, timeout)

    async def asend(self, request: Request, *, timeout: float) -> bytes:
        """:meth:`send` for asyncio: waits with ``asyncio.sleep``."""
        reply = self._in_process(request)
        wait, timed_out = _wait(reply, timeout)
        if wait > 0:
            await asyncio.sleep(wait)
        return _outcome(reply, request, timed_out, timeout)

    def _in_process(self, request: Request) -> Reply:
        body = _encode(request).encode()
        trusted = {} if self._token is None else {"Authorization": f"Bearer {self._token}"}
        return self.handle(body, trusted)

    async def aclose(self) -> None:
        """Nothing to release."""

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningService]:
        """Serve over HTTP/1.1 in a background thread while the ``with`` block runs.

        Port 0 picks a free port. Any POST path answers. On exit the server
        stops at once, hung (timeout-fault) requests included.
        """
        server = _Server((host, port), self)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield RunningService(_url(host, server.server_port), host, server.server_port)
        finally:
            server.shutdown()
            server.release()
            thread.join()

    def __repr__(self) -> str:
        with self._lock:
            return f"<FakeTaskStateService closed={len(self._closed)} requests={self._total}>"


def run_server(
    host: str = "127.0.0.1",
    port: int = 8080,
    closed: Iterable[str | int] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve a :class:`FakeTaskStateService` in the foreground until Ctrl-C.

    ``on_ready`` gets the URL to use as ``service_url`` once the port is bound.
    Raises ``OSError`` if the address cannot be bound.
    """
    server = _Server((host, port), FakeTaskStateService(closed))
    try:
        if on_ready is not None:
            on_ready(_url(host, server.server_port))
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.release()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # shutdown must not wait for requests held by a timeout fault
    request_queue_size = 1024  # the default 5 drops connects from a concurrent client

    def __init__(self, address: tuple[str, int], service: FakeTaskStateService) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.service = service
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (one that timed out: a timeout fault is there to
        # provoke exactly that) is not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def release(self) -> None:
        """Wake held requests, end idle keep-alive connections, close the socket."""
        self.stopping.set()
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real connector
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: _Server

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True  # an unread body would be read as the next request
            length = 0
        body = self.rfile.read(length) if length else b""
        reply = self.server.service.handle(body, dict(self.headers.items()))
        stopping = self.server.stopping
        if (reply.delay and stopping.wait(reply.delay)) or reply.hang is not None:
            if reply.hang is not None:
                stopping.wait(reply.hang)
            self.close_connection = True  # a timeout fault never answers
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the CLI print what matters themselves."""


def _read_request(body: bytes) -> tuple[str | None, str | None]:
    """(workid, problem) of a request body; problem is None for a valid envelope."""
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None, "the request body is not JSON"
    if not isinstance(envelope, dict):
        return None, "the request is not a JSON object"
    workid = request_workid(envelope)
    raw = envelope["data"]["workid"] if workid is not None else None
    if not (type(raw) is str or type(raw) is int) or not workid:
        return None, "data.workid is missing; expected a non-empty string"
    if envelope.get("subtopic") != SUBTOPIC:
        return workid, f"subtopic must be {SUBTOPIC!r}"
    source = envelope.get("source")
    if not isinstance(source, str) or not source:
        return workid, "source (the registered application name) is missing"
    return workid, None


def _authorized(headers: Mapping[str, str], token: str) -> bool:
    given = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _wait(reply: Reply, timeout: float) -> tuple[float, bool]:
    """How long an in-process call waits, and whether it then times out."""
    total = reply.delay + (reply.hang or 0.0)
    if reply.hang is not None or total >= timeout:
        return min(total, timeout), True
    return total, False


def _outcome(reply: Reply, request: Request, timed_out: bool, timeout: float) -> bytes:
    workid = request_workid(request)
    if timed_out:
        raise TransportError(
            f"the fake CheckTaskState service gave no answer for workid {workid!r} "
            f"within {timeout:g} s",
            workid=workid,
            retryable=True,
        )
    if 200 <= reply.status < 300:
        return reply.body
    retry_after = parse_retry_after(reply.headers.get("Retry-After"))
    raise status_error(
        reply.status, workid=workid, url="the in-process fake", retry_after=retry_after
    )


def _error_status(status: int) -> int:
    if not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), not {status}")
    return status


def _non_negative(seconds: float, name: str) -> float:
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0 seconds, not {seconds!r}")
    return float(seconds)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{_PATH}"
