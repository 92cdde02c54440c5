"""Drivers for Redis access: keys stay under ``key_prefix``; TLS and ACL users work.

* :func:`key_confinement`: hypothesis-chosen workids cached in a real Redis, then
  every key in every database checked against ``{key_prefix}:task:{workid}``.
* :func:`redis_round_trip`: one guard writes through a Redis URL, others read
  (sync and async); used with ``rediss://`` and with ACL users.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from support.redis_server import RedisServer

from taskguard import (
    AsyncTaskGuard,
    InvalidWorkId,
    TaskGuard,
    TaskGuardSettings,
)
from taskguard.state import validate_workid

# -- Redis keys stay under key_prefix ----------------------------------------------------------

_ADVERSARIAL = [
    "*",
    "?",
    "[a-z]*",
    "../../etc/passwd",
    "a:task:b",
    "taskguard:task:x",
    "}{",
    "{tag}",
    "FLUSHALL",
    "DEL *",
    " x",
    "x ",
    "\u202ertl",
    "\ufeffbom",
    "İ",
    "ﬁ",
    "😀",
    "%00",
    "\\x00",
]
WORKID_STRATEGY = (
    st.sampled_from(_ADVERSARIAL)
    | st.text(min_size=1, max_size=300)
    | st.text(st.sampled_from(list("*?[]{}:/\\. -_%$#@!\"'`~^&|<>=+\t\r\n")), min_size=1)
    | st.integers(-(10**30), 10**30)
)


@dataclass
class Confinement:
    """What the key-confinement run wrote to a real Redis, and what Redis holds."""

    examples: int = 0
    refused: int = 0  # invalid workids among the examples (refused, nothing written)
    written: set[str] = field(default_factory=set)  # valid workids cached as closed
    keys: list[str] = field(default_factory=list)  # every key in every database
    outside: list[str] = field(default_factory=list)  # keys not under "{prefix}:task:"
    strangers: list[str] = field(default_factory=list)  # under it, but no workid's key
    commands: dict[str, int] = field(default_factory=dict)  # what the guards sent


def key_confinement(
    server: RedisServer, *, examples: int = 300, prefix: str = "tgsec"
) -> Confinement:
    """Cache hypothesis-chosen workids (adversarial strings, any unicode, ints) in
    a real Redis through both write paths, read each back through another guard,
    then SCAN: every key must be ``{prefix}:task:{workid}`` of a workid written."""
    server.ensure_ready()
    server.flush()
    result = Confinement()

    def always_closed(request: dict[str, Any]) -> dict[str, Any]:
        workid = request["data"]["workid"]
        return {
            "subtopic": "CheckTaskState",
            "data": {"workid": workid, "isClosed": True, "Success": True},
        }

    def never(request: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"the reader asked the service about {request['data']['workid']!r}")

    settings = TaskGuardSettings(redis_url=server.url, key_prefix=prefix, redis_timeout=2.0)
    reader_settings = settings.model_copy(update={"local_cache_size": 0})
    with (
        TaskGuard(settings, transport=always_closed) as writer,
        TaskGuard(reader_settings, transport=never) as reader,
    ):

        @hsettings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(workid=WORKID_STRATEGY, by_lookup=st.booleans())
        def run(workid: str | int, by_lookup: bool) -> None:
            result.examples += 1
            try:
                wid = validate_workid(workid)
            except InvalidWorkId:
                result.refused += 1
                for call in (writer.mark_closed, writer.check, writer.forget):
                    refused = False
                    try:
                        call(workid)
                    except InvalidWorkId:
                        refused = True
                    assert refused, f"{call.__name__} accepted {workid!r}"
                return
            if by_lookup:
                assert writer.check(workid).closed
            else:
                writer.mark_closed(workid)
            result.written.add(wid)
            state = reader.check(workid)
            assert (state.workid, state.closed, state.origin) == (wid, True, "redis"), state

        run()
    result.commands = server.info_commandstats()
    admin = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, protocol=2)
    with admin:
        databases = admin.info("keyspace")
        for db in databases:
            index = int(str(db).removeprefix("db"))
            with redis.Redis(host="127.0.0.1", port=server.port, db=index, protocol=2) as one:
                result.keys += [k.decode() for k in one.scan_iter(count=1000)]
    head = f"{prefix}:task:"
    result.outside = [k for k in result.keys if not k.startswith(head)]
    result.strangers = [
        k for k in result.keys if k.startswith(head) and k[len(head) :] not in result.written
    ]
    return result


# -- TLS and ACL users on a redis-server of our own ----------------------------------------------


def _always_closed(request: dict[str, Any]) -> dict[str, Any]:
    workid = request["data"]["workid"]
    return {
        "subtopic": "CheckTaskState",
        "data": {"workid": workid, "isClosed": True, "Success": True},
    }


@dataclass
class RedisRoundTrip:
    """One guard writes a closed workid through ``url``; a second guard reads it."""

    label: str
    first: str  # origin of the first check ("service")
    second: str  # origin of the second guard's check ("redis" when the URL works)
    stored: str | None  # what the key holds, read by an admin connection
    redis_errors: int  # errors the two guards counted
    async_second: str  # origin of an AsyncTaskGuard's check through the same URL


def redis_round_trip(
    label: str, url: str, admin: redis.Redis, *, prefix: str, workid: str
) -> RedisRoundTrip:
    """Write through one guard, read through another (sync and async), look."""
    settings = TaskGuardSettings(redis_url=url, key_prefix=prefix, redis_timeout=2.0)
    with TaskGuard(settings, transport=_always_closed) as one:
        first = one.check(workid)
        errors = one.stats()["redis_errors"]
    with TaskGuard(settings, transport=_always_closed) as two:
        second = two.check(workid)
        errors += two.stats()["redis_errors"]

    async def from_async() -> str:
        async with AsyncTaskGuard(settings, transport=_always_closed) as three:
            state = await three.check(workid)
            nonlocal errors
            errors += three.stats()["redis_errors"]
            return state.origin.value

    async_second = asyncio.run(from_async())
    stored = admin.get(f"{prefix}:task:{workid}")
    return RedisRoundTrip(
        label=label,
        first=first.origin.value,
        second=second.origin.value,
        stored=None if stored is None else str(stored),
        redis_errors=errors,
        async_second=async_second,
    )


ACL_USER, ACL_PASSWORD = "tgworker", "w0rker-pa55"


def acl_setup(admin: redis.Redis, *, prefix: str) -> None:
    """A least-privilege user: GET, MGET, SET and DEL on ``{prefix}:task:*`` only."""
    admin.execute_command(
        "ACL",
        "SETUSER",
        ACL_USER,
        "reset",
        "on",
        f">{ACL_PASSWORD}",
        f"~{prefix}:task:*",
        "resetchannels",
        "-@all",
        "+get",
        "+mget",
        "+set",
        "+del",
    )
    admin.execute_command(
        "ACL",
        "SETUSER",
        "elsewhere",
        "reset",
        "on",
        f">{ACL_PASSWORD}",
        "~other:*",
        "-@all",
        "+get",
        "+mget",
        "+set",
        "+del",
    )
