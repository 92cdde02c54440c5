"""Fuzzing the wire: hypothesis over CheckTaskState answers, through a real guard.

:func:`expected_answer` states the rules of DESIGN section 1 again, on their own,
as an oracle: for a body and the workid asked about it says ``True``/``False``
(the answer) or ``None`` (the guard must refuse it). :func:`fuzz_wire` feeds
generated bodies to a real guard through a callable transport, with a fakeredis
tier behind it, and checks every outcome against the oracle: a refusal is a
``ProtocolError`` or ``ServiceError`` (anything else escapes and fails the run),
an answer is the oracle's, and only a confirmed close is cached, in either tier.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import fakeredis.aioredis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from taskguard import (
    AsyncTaskGuard,
    ProtocolError,
    ServiceError,
    TaskGuard,
    TaskGuardSettings,
    TaskState,
)

MAX_BYTES = 1024  # the smallest max_response_bytes the settings allow: huge is easy
PREFIX = "fz"
WORKIDS = ("12345", "w-1", "007", "-5", "Ünï ✓ 42", "x" * 256)
_MISSING: Any = object()  # a key the generated body leaves out
_DEEP = "__deep__"  # replaced by deeply nested JSON text after encoding

# -- the oracle ---------------------------------------------------------------------------


def _as_bool(value: object) -> bool | None:
    if value is True or value is False:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _same_task(answered: object, workid: str) -> bool:
    if type(answered) is str:
        return answered == workid
    return type(answered) is int and str(answered) == workid


def expected_answer(body: object, workid: str, max_bytes: int = MAX_BYTES) -> bool | None:
    """DESIGN section 1, restated: the answer a body gives about ``workid``, or
    None when it must be refused."""
    if isinstance(body, Mapping):
        envelope: object = body
    else:
        if isinstance(body, bytes):
            if len(body) > max_bytes:
                return None
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return None
        elif isinstance(body, str):
            if len(body) > max_bytes:
                return None
            text = body
        else:
            return None
        try:
            envelope = json.loads(text)
        except (ValueError, RecursionError):
            return None
    if not isinstance(envelope, Mapping) or envelope.get("subtopic") != "CheckTaskState":
        return None
    data, message = envelope.get("data"), envelope.get("message")
    if data is not None and message is not None:
        try:
            if data != message:
                return None  # both present and different
        except RecursionError:
            return None  # too deep to tell whether they agree
    payload = data if data is not None else message
    if not isinstance(payload, Mapping):
        return None
    success = _as_bool(payload.get("Success"))
    if success is not True:  # false: a service error; missing or odd: a protocol error
        return None
    if "workid" not in payload or not _same_task(payload["workid"], workid):
        return None
    return _as_bool(payload.get("isClosed"))


def good_answer(workid: str, closed: bool) -> dict[str, Any]:
    """A well-formed answer about ``workid``."""
    return {
        "subtopic": "CheckTaskState",
        "data": {"workid": workid, "isClosed": closed, "Success": True, "ErrorMessage": None},
    }


# -- the generators -------------------------------------------------------------------------


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN: it is not JSON)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


_RANDOM: Any = object()  # drawn from a field: use random JSON instead
_SMALL_JSON = json_values(3)
_EXTRAS = st.dictionaries(st.text(max_size=8), json_values(4), max_size=3)
_ENVELOPE_EXTRAS = st.dictionaries(
    st.sampled_from(["channel", "topic", "source", "x"]), _SMALL_JSON
)


def _field(right: list[Any], wrong: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly a right value, else a near miss, a wrong type, random JSON or missing."""
    return st.sampled_from(right * (3 * len(wrong) // len(right) + 3) + [*wrong, _RANDOM])


_IS_CLOSED = _field(
    [True, False, "true", "FALSE", "True"], ["yes", 1, 0, None, "", " true", _MISSING]
)
_SUCCESS = _field([True, True, "true", "TRUE"], [False, "false", 1, None, _MISSING])
_ERROR_MESSAGE = _field([None, _MISSING], ["the task state could not be read", 7])
_SUBTOPIC = _field(["CheckTaskState"], ["checktaskstate", "CheckTask", "", None, _MISSING])
_WORKID = {
    w: _field(
        [w, w, int(w) if w.lstrip("-").isdigit() else w],
        [
            "other",
            w + " ",
            w.upper() if w.upper() != w else w + "x",
            "",
            None,
            True,
            12345.0,
            [w],
            _MISSING,
        ],
    )
    for w in WORKIDS
}
_PLACEMENT = st.sampled_from(
    ["data"] * 5
    + ["message"] * 2
    + ["both"] * 2
    + ["null-data"]
    + ["both-differ", "not-an-object", "neither"]
)
_ENCODING = st.sampled_from(
    ["dict"] * 3 + ["str"] * 2 + ["bytes"] * 4 + ["bad-utf8", "huge", "huge"]
)
_DEPTH = st.sampled_from([0] * 6 + [50, 5000])


def _nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@dataclass(frozen=True)
class Case:
    """One generated answer to the question "is ``workid`` closed?"."""

    workid: str
    body: Any
    shape: str  # how it was built, for the tallies


@st.composite
def envelopes(draw: st.DrawFn) -> Case:
    """Answer envelopes, mostly almost right: each field takes a right value, a
    near miss, a wrong type or random JSON, or goes missing."""
    workid = draw(st.sampled_from(WORKIDS))
    strategies = {
        "isClosed": _IS_CLOSED,
        "Success": _SUCCESS,
        "workid": _WORKID[workid],
        "ErrorMessage": _ERROR_MESSAGE,
    }
    chosen = {name: draw(strategy) for name, strategy in strategies.items()}
    for name, value in chosen.items():
        if value is _RANDOM:
            chosen[name] = draw(_SMALL_JSON)
    extras = draw(_EXTRAS)
    depth = draw(_DEPTH)
    placement = draw(_PLACEMENT)
    encoding = draw(_ENCODING)

    def payload() -> dict[str, Any]:
        built = dict(extras)
        built.update({k: v for k, v in chosen.items() if v is not _MISSING})
        if depth:
            built["nested"] = _nest(depth) if encoding == "dict" else _DEEP
        return built

    envelope: dict[str, Any] = draw(_ENVELOPE_EXTRAS)
    subtopic = draw(_SUBTOPIC)
    if subtopic is _RANDOM:
        subtopic = draw(_SMALL_JSON)
    if subtopic is not _MISSING:
        envelope["subtopic"] = subtopic
    if placement in ("data", "both", "both-differ"):
        envelope["data"] = payload()
    if placement in ("message", "both", "both-differ", "null-data"):
        envelope["message"] = payload()  # built again: equal, not the same object
    if placement == "both-differ":
        envelope["message"]["isClosed"] = not envelope["data"].get("isClosed")
    if placement == "null-data":
        envelope["data"] = None
    if placement == "not-an-object":
        envelope["data"] = draw(st.sampled_from([[payload()], "data", 1, True]))
    return Case(workid, _encode(draw, envelope, encoding, depth), f"{placement}/{encoding}")


def _encode(draw: st.DrawFn, envelope: dict[str, Any], encoding: str, depth: int) -> Any:
    if encoding == "dict":
        return envelope
    text = json.dumps(envelope)
    if depth:
        text = text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth)
    if encoding == "str":
        return text
    raw = text.encode()
    if encoding == "bad-utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + raw[at:]
    if encoding == "huge":
        pad = draw(st.integers(1, 4 * MAX_BYTES))
        return raw[:-1] + b', "pad": "' + b"x" * pad + b'"}'
    return raw


_KINDS = st.sampled_from(["json-dict", "json-text", "text", "bytes", "deep"])
_ANY_DICT = st.dictionaries(st.text(max_size=10), json_values(), max_size=5)
_ANY_JSON = json_values(20)


@st.composite
def anything(draw: st.DrawFn) -> Case:
    """Bodies with no regard for the protocol: any JSON, any text, any bytes."""
    workid = draw(st.sampled_from(WORKIDS))
    kind = draw(_KINDS)
    body: Any
    if kind == "json-dict":
        body = draw(_ANY_DICT)
    elif kind == "json-text":
        body = json.dumps(draw(_ANY_JSON))
    elif kind == "text":
        body = draw(st.text(max_size=300))
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        depth = draw(st.sampled_from([10, 200, 5000, 100_000]))
        body = ("[" * depth + "]" * depth).encode()
    return Case(workid, body, kind)


STRATEGIES: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    "envelopes": envelopes,
    "anything": anything,
}


# -- the driver ------------------------------------------------------------------------------


@dataclass
class FuzzTally:
    """What a fuzz run tried and how the guard answered."""

    strategy: str
    driver: str
    examples: int = 0
    closed: int = 0
    open: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    shapes: collections.Counter[str] = field(default_factory=collections.Counter)


class _Box:
    """The body the callable transport answers with next."""

    body: Any = None

    def __call__(self, request: dict[str, Any]) -> Any:
        return self.body


def _judge(case: Case, outcome: object, stored: object, again: TaskState, tally: FuzzTally) -> None:
    expected = expected_answer(case.body, case.workid)
    if expected is None:
        assert isinstance(outcome, (ProtocolError, ServiceError)), (
            f"{case.shape}: expected a refusal, got {outcome!r}"
        )
        tally.refused[type(outcome).__name__] += 1
    else:
        assert isinstance(outcome, TaskState), f"{case.shape}: expected an answer, got {outcome!r}"
        assert (outcome.workid, outcome.closed) == (case.workid, expected), case.shape
        if expected:
            tally.closed += 1
        else:
            tally.open += 1
    # Only a confirmed close is cached: in Redis, and in-process (asked again, the
    # service now says open; a cached close answers from the local tier instead).
    assert stored == (b"closed" if expected is True else None), f"{case.shape}: Redis {stored!r}"
    if expected is True:
        assert again == (case.workid, True, "local"), f"{case.shape}: {again!r}"
    else:
        assert again == (case.workid, False, "service"), f"{case.shape}: {again!r}"
    tally.examples += 1
    tally.shapes[case.shape] += 1


def _settings() -> TaskGuardSettings:
    return TaskGuardSettings(max_response_bytes=MAX_BYTES, key_prefix=PREFIX, retry_attempts=1)


def _hypothesis(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same examples on every run
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


def fuzz_wire(strategy: str = "envelopes", *, examples: int = 1500) -> FuzzTally:
    """Run ``examples`` generated bodies through a ``TaskGuard``; raises (with
    hypothesis's smallest failing example) if any outcome breaks the rules."""
    tally = FuzzTally(strategy, "TaskGuard")
    box = _Box()
    client = fakeredis.FakeRedis()
    with TaskGuard(_settings(), transport=box, redis=client) as guard:

        @_hypothesis(examples)
        @given(case=STRATEGIES[strategy]())
        def run(case: Case) -> None:
            guard.forget(case.workid)
            box.body = case.body
            outcome: object
            try:
                outcome = guard.check(case.workid)
            except (ProtocolError, ServiceError) as exc:  # anything else escapes: a failure
                outcome = exc
            stored = client.get(f"{PREFIX}:task:{case.workid}")
            box.body = good_answer(case.workid, closed=False)
            _judge(case, outcome, stored, guard.check(case.workid), tally)

        run()
    return tally


def fuzz_wire_async(strategy: str = "envelopes", *, examples: int = 500) -> FuzzTally:
    """:func:`fuzz_wire` through an ``AsyncTaskGuard`` (its own event loop; call
    it from synchronous code)."""
    tally = FuzzTally(strategy, "AsyncTaskGuard")
    box = _Box()
    client = fakeredis.aioredis.FakeRedis()
    guard = AsyncTaskGuard(_settings(), transport=box, redis=client)
    loop = asyncio.new_event_loop()

    async def one(case: Case) -> tuple[object, object, TaskState]:
        await guard.forget(case.workid)
        box.body = case.body
        outcome: object
        try:
            outcome = await guard.check(case.workid)
        except (ProtocolError, ServiceError) as exc:
            outcome = exc
        stored = await client.get(f"{PREFIX}:task:{case.workid}")
        box.body = good_answer(case.workid, closed=False)
        return outcome, stored, await guard.check(case.workid)

    @_hypothesis(examples)
    @given(case=STRATEGIES[strategy]())
    def run(case: Case) -> None:
        _judge(case, *loop.run_until_complete(one(case)), tally)

    try:
        run()
    finally:
        loop.run_until_complete(guard.aclose())
        loop.run_until_complete(client.aclose())
        loop.close()
    return tally
