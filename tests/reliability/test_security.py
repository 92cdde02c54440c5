"""Security: secrets never leak, Redis keys stay under ``key_prefix``, TLS and ACL
users work (and TLS verifies), oversized or trickling answers cannot hold a
worker or its memory."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable

import pytest
from support.redis_server import RedisServer

from reliability.hardening import leak_hunt
from reliability.hostile import HostileHttpServer, RedisProcess, TlsFiles
from reliability.redis_access import (
    ACL_PASSWORD,
    ACL_USER,
    acl_setup,
    key_confinement,
    redis_round_trip,
)
from taskguard import AsyncTaskGuard, LookupFailed, ProtocolError, TaskGuard, TaskGuardSettings

# -- secrets --------------------------------------------------------------------------------------


def test_no_secret_in_logs_reprs_errors_or_cli_output() -> None:
    hunt = leak_hunt()
    assert hunt.leaks == []
    # The hunt looked where it says it looked.
    assert hunt.texts["logs"] > 50
    assert hunt.texts["exceptions"] > 200
    assert hunt.texts["cli"] == 12
    assert hunt.texts["repr"] > 20
    assert {"LookupFailed", "ProtocolError", "ServiceError"} <= set(hunt.errors_seen)


# -- Redis keys -----------------------------------------------------------------------------------


def test_no_workid_addresses_a_key_outside_the_prefix(live_redis: RedisServer) -> None:
    result = key_confinement(live_redis, examples=500, prefix="tgsec")
    assert result.examples >= 500
    assert result.refused > 0  # invalid workids were among them, and refused
    assert len(result.written) > 200
    assert result.outside == []
    assert result.strangers == []
    assert len(result.keys) == len(result.written), "one key per workid, nothing else"
    sent = set(result.commands) - {"config|resetstat", "flushall", "info", "client|setinfo"}
    assert sent <= {"get", "mget", "set", "del"}, f"the guards sent {sent}"


# -- TLS and ACL users ---------------------------------------------------------------


def test_rediss_with_a_self_signed_certificate(
    tls_redis: RedisProcess, tls_files: TlsFiles
) -> None:
    url = tls_redis.url(query=f"?ssl_ca_certs={tls_files.ca}")
    with tls_redis.admin() as admin:
        trip = redis_round_trip("tls", url, admin, prefix="tls", workid="t-1")
    assert (trip.first, trip.second, trip.async_second) == ("service", "redis", "redis")
    assert trip.stored == "closed"
    assert trip.redis_errors == 0


def test_rediss_verifies_the_certificate(tls_redis: RedisProcess) -> None:
    # Without the CA the self-signed certificate is refused: the guard does not
    # fall back to an unverified connection, it asks the service instead.
    started = time.monotonic()
    with tls_redis.admin() as admin:
        trip = redis_round_trip("tls-unverified", tls_redis.url(), admin, prefix="tlsv", workid="t")
    assert (trip.first, trip.second, trip.async_second) == ("service", "service", "service")
    assert trip.stored is None
    assert trip.redis_errors >= 3
    assert time.monotonic() - started < 5.0


def test_an_acl_user_with_only_the_rights_it_needs(acl_redis: RedisProcess) -> None:
    with acl_redis.admin() as admin:
        acl_setup(admin, prefix="tgacl")
        url = acl_redis.url(user=ACL_USER, password=ACL_PASSWORD)
        trip = redis_round_trip("acl", url, admin, prefix="tgacl", workid="a-1")
        assert (trip.first, trip.second, trip.async_second) == ("service", "redis", "redis")
        assert trip.stored == "closed"
        assert trip.redis_errors == 0


@pytest.mark.parametrize(
    ("user", "password"), [(ACL_USER, "wrong-password"), ("elsewhere", ACL_PASSWORD)]
)
def test_an_acl_refusal_falls_back_to_the_service(
    acl_redis: RedisProcess, user: str, password: str
) -> None:
    with acl_redis.admin() as admin:
        acl_setup(admin, prefix="tgacl")
        url = acl_redis.url(user=user, password=password)
        trip = redis_round_trip("acl-refused", url, admin, prefix="tgacl", workid=f"r-{user}")
    assert (trip.first, trip.second, trip.async_second) == ("service", "service", "service")
    assert trip.stored is None
    assert trip.redis_errors > 0


# -- answers that are too large or never end ------------------------------------------

MAX_BYTES = 64 * 1024
PEAK_LIMIT = 1024 * 1024  # 16 times max_response_bytes: nothing like buffering the body


def _settings(url: str) -> TaskGuardSettings:
    return TaskGuardSettings(
        service_url=url, max_response_bytes=MAX_BYTES, request_timeout=2.0, retry_attempts=3
    )


def _measure(check: Callable[[], object]) -> tuple[BaseException | None, float, int]:
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        check()
    except Exception as exc:  # judged by the caller
        error = exc
    took = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return error, took, peak


@pytest.mark.parametrize("mode", ["endless-chunked", "endless-raw", "huge-length"])
def test_an_endless_answer_is_refused_without_buffering_it(mode: str) -> None:
    with HostileHttpServer(mode) as server, TaskGuard(_settings(server.url)) as guard:
        for n in range(5):
            error, took, peak = _measure(lambda n=n: guard.check(f"e-{n}"))  # type: ignore[misc]
            assert isinstance(error, ProtocolError), error
            assert "max_response_bytes" in str(error)
            assert took < 1.0, f"{took:.3f} s"
            assert peak < PEAK_LIMIT, f"{peak} bytes at peak"
        assert server.connections == 5, "a refused answer is not retried"


@pytest.mark.parametrize("mode", ["endless-chunked", "endless-raw", "huge-length"])
async def test_an_endless_answer_is_refused_without_buffering_it_async(mode: str) -> None:
    with HostileHttpServer(mode) as server:
        async with AsyncTaskGuard(_settings(server.url)) as guard:
            for n in range(5):
                tracemalloc.start()
                started = time.monotonic()
                with pytest.raises(ProtocolError, match="max_response_bytes"):
                    await asyncio.wait_for(guard.check(f"e-{n}"), 10)
                took = time.monotonic() - started
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert took < 1.0, f"{took:.3f} s"
                assert peak < PEAK_LIMIT, f"{peak} bytes at peak"
        assert server.connections == 5


def test_a_trickling_answer_cannot_hold_a_blocking_check() -> None:
    # urllib3 bounds each socket read, not the answer: the transport reads the
    # body a read at a time and gives up once the attempt's timeout has passed.
    with HostileHttpServer("drip", drip=0.05) as server:
        settings = TaskGuardSettings(
            service_url=server.url,
            request_timeout=0.3,
            retry_attempts=2,
            retry_deadline=1.0,
            retry_backoff=0.001,
            retry_backoff_max=0.002,
        )
        with TaskGuard(settings) as guard:
            started = time.monotonic()
            with pytest.raises(LookupFailed) as info:
                guard.check("d-1")
            assert time.monotonic() - started <= settings.retry_deadline + 0.5
            assert "no answer within" in str(info.value.__cause__)


async def test_a_trickling_answer_cannot_hold_an_async_check() -> None:
    # One byte every 50 ms never trips a per-read timeout; the attempt's own
    # timeout must still end it, and the lookup must end within its deadline.
    with HostileHttpServer("drip", drip=0.05) as server:
        settings = TaskGuardSettings(
            service_url=server.url,
            request_timeout=0.3,
            retry_attempts=2,
            retry_deadline=1.0,
            retry_backoff=0.001,
            retry_backoff_max=0.002,
        )
        async with AsyncTaskGuard(settings) as guard:
            started = time.monotonic()
            with pytest.raises(LookupFailed):
                await asyncio.wait_for(guard.check("d-1"), 10)
            assert time.monotonic() - started <= settings.retry_deadline + 0.5
