"""Fuzzing the wire: thousands of generated CheckTaskState answers through a real
guard. Each outcome is a refusal (``ProtocolError``/``ServiceError``) or the
answer the body really gives for that workid; nothing else escapes; only a
confirmed close is cached, in-process or in Redis (fakeredis here)."""

from __future__ import annotations

import json

import pytest

from reliability.wire import expected_answer, fuzz_wire, fuzz_wire_async, good_answer
from taskguard import ProtocolError, TaskGuard, TaskGuardSettings


def test_envelopes_through_the_sync_guard() -> None:
    tally = fuzz_wire("envelopes", examples=1500)
    assert tally.examples >= 1500
    # The generator reaches every corner: answers of both kinds and both refusals.
    assert tally.closed > 100
    assert tally.open > 100
    assert tally.refused["ProtocolError"] > 500
    assert tally.refused["ServiceError"] > 10
    assert len(tally.shapes) >= 30


def test_anything_through_the_sync_guard() -> None:
    tally = fuzz_wire("anything", examples=500)
    assert tally.examples >= 500
    assert tally.refused["ProtocolError"] == tally.examples  # no accident makes an answer


def test_envelopes_through_the_async_guard() -> None:
    tally = fuzz_wire_async("envelopes", examples=400)
    assert tally.examples >= 400
    assert tally.closed > 20
    assert tally.open > 20


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_payloads_too_deep_to_compare_are_refused_not_a_crash(depth: int) -> None:
    # A transport may hand over any mapping: 'data' and 'message' both present and
    # too deeply nested to compare used to escape as a RecursionError.
    def payload() -> dict[str, object]:
        return {"workid": "w", "isClosed": True, "Success": True, "x": _nested(depth)}

    body = {"subtopic": "CheckTaskState", "data": payload(), "message": payload()}
    assert expected_answer(body, "w") is None
    with TaskGuard(TaskGuardSettings(), transport=lambda request: body) as guard:
        with pytest.raises(ProtocolError, match="differ"):
            guard.check("w")
        assert guard.stats()["lookups"] == 1


def test_the_oracle_accepts_what_the_seed_sample_says() -> None:
    # The fuzz oracle must not refuse everything: the seed's own sample is an answer.
    sample = good_answer("12345", closed=True)
    for body in (sample, json.dumps(sample), json.dumps(sample).encode()):
        assert expected_answer(body, "12345") is True
    assert expected_answer(json.dumps(sample).encode(), "12346") is None
