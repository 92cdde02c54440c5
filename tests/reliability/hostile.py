"""Hostile and unusual servers for the security tests, all on 127.0.0.1.

* :class:`HostileHttpServer`: answers every request with headers and then an
  endless body (chunked, or close-delimited), a body that declares a huge
  ``Content-Length``, or a body that trickles one byte at a time.
* :class:`RedisProcess`: a ``redis-server`` of our own, with any extra options
  (TLS, ACL users), started on a free port and stopped at the end.
* :func:`make_tls_files`: a throwaway CA and a server certificate for 127.0.0.1,
  made with the ``openssl`` command line.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

_CHUNK = b"x" * 65536


class HostileHttpServer:
    """An HTTP/1.1 server whose every answer is a trap.

    ``mode``: ``"endless-chunked"`` (chunks of 64 KiB forever), ``"endless-raw"``
    (no length, bytes until the client hangs up), ``"huge-length"`` (declares
    10**12 bytes, then sends them slowly), ``"drip"`` (a byte every ``drip`` s).
    ``sent`` counts the body bytes it managed to push out.
    """

    def __init__(self, mode: str, *, drip: float = 0.05) -> None:
        self.mode = mode
        self.drip = drip
        self.sent = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/checktaskstate"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # the 0.1 s accept timeout, or the socket closed
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with contextlib.suppress(OSError), conn:
            _read_request(conn)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            if self.mode == "endless-chunked":
                conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                frame = b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK)
                while not self._stop.is_set():
                    conn.sendall(frame)
                    self._count(len(_CHUNK))
            elif self.mode == "endless-raw":
                conn.sendall(head + b"Connection: close\r\n\r\n")
                while not self._stop.is_set():
                    conn.sendall(_CHUNK)
                    self._count(len(_CHUNK))
            elif self.mode == "huge-length":
                conn.sendall(head + b"Content-Length: 1000000000000\r\n\r\n")
                while not self._stop.wait(0.01):
                    conn.sendall(_CHUNK)
                    self._count(len(_CHUNK))
            elif self.mode == "drip":
                conn.sendall(head + b"Content-Length: 1000\r\n\r\n")
                while not self._stop.wait(self.drip):
                    conn.sendall(b" ")
                    self._count(1)
            else:
                raise ValueError(f"unknown mode {self.mode!r}")

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(5.0)

    def __enter__(self) -> HostileHttpServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the client went away")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the client went away")
        body += chunk


# -- redis-server with options of our own ---------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate and a server certificate and key signed by it."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a certificate for 127.0.0.1 / localhost (2048-bit RSA,
    valid one day), made with ``openssl``. Raises ``OSError`` without it."""

    def run(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60
        )

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=taskguard test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "server.crt",
        "-extfile",
        "san.cnf",
    )
    return TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A ``redis-server`` of our own on a free 127.0.0.1 port, no persistence.

    With ``tls`` it listens for TLS only (``--port 0 --tls-port N``). ``admin()``
    is a redis-py client with full rights for setting things up and looking.
    """

    def __init__(self, executable: str, *, tls: TlsFiles | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="taskguard-redis-extra-")
        self.port = _free_port()
        self.tls = tls
        args = [
            executable,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--logfile",
            str(Path(self._dir.name, "redis.log")),
        ]
        if tls is None:
            args += ["--port", str(self.port)]
        else:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(tls.cert),
                "--tls-key-file",
                str(tls.key),
                "--tls-ca-cert-file",
                str(tls.ca),
                "--tls-auth-clients",
                "no",
            ]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while True:
            if self._process.poll() is not None:
                log = Path(self._dir.name, "redis.log")
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                self._dir.cleanup()
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{tail}")
            try:
                with self.admin() as client:
                    client.ping()
                return
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("redis-server did not answer PING") from None
                time.sleep(0.02)

    def url(self, *, user: str | None = None, password: str | None = None, query: str = "") -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        auth = f"{user or ''}:{password}@" if password is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def admin(self) -> redis.Redis:
        options: dict[str, Any] = {"socket_timeout": 5, "decode_responses": True, "protocol": 2}
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._dir.cleanup()
