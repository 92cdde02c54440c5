"""The two servers a benchmark run starts for itself, and stops whatever happens.

* :class:`RedisProcess`: a ``redis-server`` on a free 127.0.0.1 port, no
  persistence (``--save "" --appendonly no``), in a temporary directory. The
  approach of ``tests/support/redis_server.py``, copied rather than imported so
  that the benchmarks do not depend on the test tree.
* :class:`ServiceProcess`: the reference CheckTaskState service,
  ``taskguard.testing.FakeTaskStateService().serve()``, in a child Python
  process (``python -m benchmarks.servers``). A child, not a thread of the
  benchmark process: a server thread would take the GIL from the client being
  measured, in proportions that differ between the two sides of a ratio.

Both are started under ``taskset -c CPU`` when the run is pinned, so that the
client and the server it talks to share one core (a loopback round trip costs
about 36 µs there and about 125 µs across cores).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["RedisProcess", "ServiceProcess", "pinned_command"]

_START_TIMEOUT = 15.0


def pinned_command(command: list[str], cpu: int | None) -> list[str]:
    """``command`` under ``taskset -c cpu`` when a CPU is given."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate, then kill after a grace period; never raises."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(OSError):
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


class RedisProcess:
    """One ``redis-server`` on ``127.0.0.1:port``; a context manager."""

    def __init__(self, cpu: int | None, executable: str = "redis-server") -> None:
        self.cpu = cpu
        self.executable = executable
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="taskguard-bench-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __enter__(self) -> RedisProcess:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        log = Path(self._dir.name, "redis.log")
        command = [
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),  # no persistence: memory figures stay clean
            *("--dir", self._dir.name, "--logfile", str(log)),
        ]
        self._process = subprocess.Popen(
            pinned_command(command, self.cpu),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{tail}")
            with contextlib.suppress(OSError):
                if self._ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def close(self) -> None:
        process, self._process = self._process, None
        _stop(process)
        self._dir.cleanup()


class ServiceProcess:
    """The reference CheckTaskState service over loopback HTTP, in a child process."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServiceProcess:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        command = [sys.executable, "-m", "benchmarks.servers"]
        self._process = subprocess.Popen(
            pinned_command(command, self.cpu),
            stdin=subprocess.PIPE,  # the child serves until its stdin closes
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._process.stdout is not None
        # The child prints its URL once it listens; a dead child ends the read.
        line = self._process.stdout.readline().decode().strip()
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the reference service did not start (it said {line!r})")
        self.url = line

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _stop(process)
        if process.stdout is not None:
            process.stdout.close()


def _serve_until_stdin_closes() -> None:
    """The child's main: serve, print the URL, return when the parent goes away."""
    from taskguard.testing import FakeTaskStateService

    # Ctrl-C reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with FakeTaskStateService().serve(host="127.0.0.1", port=0) as running:
        print(running.url, flush=True)
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass


if __name__ == "__main__":
    _serve_until_stdin_closes()
