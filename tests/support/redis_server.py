"""A real ``redis-server`` for tests: started on a free 127.0.0.1 port, with no
persistence, in a temporary directory; it can be killed, restarted on the same
port, and frozen (SIGSTOP: it accepts connections but never answers).

It talks to the server over a raw socket, not redis-py, so that the tool that
checks the server does not depend on the code under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer"]

_START_TIMEOUT = 10.0


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, started at construction."""

    def __init__(self, executable: str = "redis-server") -> None:
        self.executable = executable
        self._dir = tempfile.TemporaryDirectory(prefix="taskguard-redis-")
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self.start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the process is alive (frozen or not)."""
        return self._process is not None and self._process.poll() is None

    @property
    def frozen(self) -> bool:
        """True between :meth:`freeze` and :meth:`thaw`."""
        return self._frozen and self.running

    def start(self) -> None:
        """Start the server (on the same port after :meth:`stop`); wait for PING."""
        if self.running:
            return
        log = Path(self._dir.name, "redis.log")
        options = {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--save": "",  # no persistence: a restart starts empty
            "--appendonly": "no",
            "--dir": self._dir.name,
            "--logfile": str(log),
        }
        self._process = subprocess.Popen(
            [self.executable, *(word for pair in options.items() for word in pair)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._frozen = False
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{tail}")
            with contextlib.suppress(OSError):
                if self.command("PING", timeout=1.0) == b"PONG":
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the server at once (SIGKILL works on a frozen one too)."""
        process, self._process = self._process, None
        self._frozen = False
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, the server never answers."""
        if self._process is None or not self.running:
            raise RuntimeError("redis-server is not running")
        os.kill(self._process.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT: undo :meth:`freeze`."""
        if self._process is not None and self.running:
            os.kill(self._process.pid, signal.SIGCONT)
        self._frozen = False

    def ensure_ready(self) -> None:
        """Running and thawed, whatever the last test did to it."""
        self.thaw()
        self.start()

    def flush(self) -> None:
        """Delete every key and reset the command statistics."""
        self.command("FLUSHALL")
        self.command("CONFIG", "RESETSTAT")

    def info_commandstats(self) -> dict[str, int]:
        """Calls per command since the last :meth:`flush`: ``{"mget": 1, ...}``."""
        reply = self.command("INFO", "commandstats")
        assert isinstance(reply, bytes)
        calls = {}
        for line in reply.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, fields = line[len("cmdstat_") :].partition(":")
                stats = dict(field.split("=", 1) for field in fields.split(","))
                calls[name] = int(stats["calls"])
        return calls

    def command(self, *args: str, timeout: float = 5.0) -> bytes | None:
        """Send one command over a fresh connection; its simple or bulk reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            parts = [f"*{len(args)}\r\n".encode()]
            for arg in args:
                data = arg.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"".join(parts))
            return _read_reply(sock)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._dir.cleanup()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running}, frozen={self.frozen})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read_reply(sock: socket.socket) -> bytes | None:
    buffer = b""
    while b"\r\n" not in buffer:
        buffer += _recv(sock)
    head, _, rest = buffer.partition(b"\r\n")
    kind, value = head[:1], head[1:]
    if kind == b"+":
        return value
    if kind == b"-":
        raise RuntimeError(f"redis-server replied with an error: {value.decode()}")
    if kind == b"$":
        size = int(value)
        if size < 0:
            return None
        while len(rest) < size + 2:
            rest += _recv(sock)
        return rest[:size]
    if kind == b":":
        return value
    raise RuntimeError(f"unexpected reply from redis-server: {buffer[:80]!r}")


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("redis-server closed the connection")
    return chunk
