"""Fixtures of the reliability suite (the session's real Redis comes from tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from support.redis_server import RedisServer

from reliability.hostile import RedisProcess, TlsFiles, make_tls_files


@pytest.fixture
def live_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, running and empty; running and thawed again
    afterwards, whatever the test did to it (killed it, froze it)."""
    redis_server.ensure_ready()
    redis_server.flush()
    yield redis_server
    redis_server.ensure_ready()


def _unavailable(message: str) -> None:
    if os.environ.get("TASKGUARD_REQUIRE_REDIS") == "1":
        pytest.fail(f"{message}, and TASKGUARD_REQUIRE_REDIS=1 requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 (needs ``openssl``)."""
    if shutil.which("openssl") is None:
        _unavailable("the openssl command is not on PATH (apt-get install openssl)")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_redis(redis_server: RedisServer, tls_files: TlsFiles) -> Iterator[RedisProcess]:
    """A redis-server of our own listening for TLS only, with the throwaway certificate."""
    try:
        server = RedisProcess(redis_server.executable, tls=tls_files)
    except RuntimeError as exc:  # a build without TLS refuses --tls-port
        _unavailable(f"this redis-server cannot serve TLS ({str(exc)[-300:]})")
    yield server
    server.close()


@pytest.fixture(scope="session")
def acl_redis(redis_server: RedisServer) -> Iterator[RedisProcess]:
    """A plain redis-server of our own, for ACL users (the session's stays untouched)."""
    server = RedisProcess(redis_server.executable)
    yield server
    server.close()
