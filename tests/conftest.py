"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port for the whole session.

    Skipped when ``redis-server`` is not installed, unless ``TASKGUARD_REQUIRE_REDIS=1``
    (CI), where a missing server fails the tests instead.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        message = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("TASKGUARD_REQUIRE_REDIS") == "1":
            pytest.fail(f"{message}, and TASKGUARD_REQUIRE_REDIS=1 requires it", pytrace=False)
        pytest.skip(message)
    server = RedisServer(executable)
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis, running, thawed and empty."""
    redis_server.ensure_ready()
    redis_server.flush()
    return redis_server.url
