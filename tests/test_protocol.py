"""The CheckTaskState wire rules of DESIGN section 1, one test per rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskguard import ProtocolError, ServiceError
from taskguard.protocol import (
    CheckTaskStateRequest,
    RequestFactory,
    parse_response,
    read_answer,
)


def answer(
    closed: Any = True,
    workid: Any = "12345",
    success: Any = True,
    key: str = "data",
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"isClosed": closed, "workid": workid, "Success": success}
    payload["ErrorMessage"] = None
    return {
        "channel": "Salesforce",
        "topic": "Call",
        "subtopic": "CheckTaskState",
        key: payload,
        **extra,
    }


SEED_SAMPLE = """{   "channel": "Salesforce",
    "topic": "Call",
    "subtopic": "CheckTaskState",
    "data":
    {
        "isClosed": true,
        "workid": "12345",
        "Success": true,
        "ErrorMessage": null
        }
}"""


def test_request_envelope_matches_the_seed_sample() -> None:
    request = RequestFactory(source="myapp")("12345")
    assert request == {
        "channel": "Salesforce",
        "topic": "Call",
        "subtopic": "CheckTaskState",
        "source": "myapp",
        "data": {"workid": "12345"},
    }
    # The frozen model agrees with what goes on the wire.
    assert CheckTaskStateRequest.model_validate(request).model_dump() == request


def test_request_encodes_channel_topic_and_source_from_settings() -> None:
    body = RequestFactory(source="crm", channel="Zendesk", topic="Case").encode("W-1")
    assert json.loads(body) == {
        "channel": "Zendesk",
        "topic": "Case",
        "subtopic": "CheckTaskState",
        "source": "crm",
        "data": {"workid": "W-1"},
    }


def test_the_seed_sample_response_reads_as_closed() -> None:
    assert read_answer(SEED_SAMPLE, "12345") is True
    assert read_answer(SEED_SAMPLE.encode(), "12345") is True


def test_open_answer() -> None:
    assert read_answer(answer(closed=False), "12345") is False


def test_payload_under_message_is_accepted() -> None:
    assert read_answer(answer(key="message"), "12345") is True


def test_data_and_message_equal_is_accepted() -> None:
    body = answer()
    body["message"] = dict(body["data"])
    assert read_answer(body, "12345") is True


def test_data_and_message_that_differ_is_a_protocol_error() -> None:
    body = answer(closed=True)
    body["message"] = {**body["data"], "isClosed": False}
    with pytest.raises(ProtocolError, match="differ"):
        read_answer(body, "12345")


def test_neither_data_nor_message_is_a_protocol_error() -> None:
    body = answer()
    del body["data"]
    with pytest.raises(ProtocolError, match="neither"):
        read_answer(body, "12345")


@pytest.mark.parametrize(
    ("raw", "closed"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
    ],
)
def test_isclosed_accepts_booleans_and_their_strings(raw: object, closed: bool) -> None:
    assert read_answer(answer(closed=raw), "12345") is closed


@pytest.mark.parametrize("raw", ["yes", "1", 1, 0, None, "", " true", [], {}, 1.0])
def test_isclosed_of_another_kind_is_a_protocol_error(raw: object) -> None:
    with pytest.raises(ProtocolError, match="isClosed"):
        read_answer(answer(closed=raw), "12345")


@pytest.mark.parametrize("raw", [True, "true", "TRUE", "True"])
def test_success_accepts_booleans_and_their_strings(raw: object) -> None:
    assert read_answer(answer(success=raw), "12345") is True


@pytest.mark.parametrize("raw", ["ok", 1, None, "tru"])
def test_success_of_another_kind_is_a_protocol_error(raw: object) -> None:
    with pytest.raises(ProtocolError, match="Success"):
        read_answer(answer(success=raw), "12345")


def test_success_false_is_a_service_error_with_the_error_message() -> None:
    body = answer(success=False)
    body["data"]["ErrorMessage"] = "application not registered"
    del body["data"]["isClosed"]  # may be absent when the request failed
    with pytest.raises(ServiceError) as info:
        read_answer(body, "12345")
    assert info.value.error_message == "application not registered"
    assert info.value.workid == "12345"
    assert "application not registered" in str(info.value)


def test_success_false_is_never_closed_even_if_isclosed_says_so() -> None:
    with pytest.raises(ServiceError):
        read_answer(answer(closed=True, success="false"), "12345")


def test_another_tasks_workid_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="99999") as info:
        read_answer(answer(workid="99999"), "12345")
    assert info.value.workid == "12345"


def test_workids_compare_as_strings() -> None:
    assert read_answer(answer(workid=12345), "12345") is True


@pytest.mark.parametrize("wrong", [12345.0, True, None, ["12345"], " 12345"])
def test_workid_of_another_type_or_spelling_is_a_protocol_error(wrong: object) -> None:
    with pytest.raises(ProtocolError):
        read_answer(answer(workid=wrong), "12345")


@pytest.mark.parametrize("missing", ["isClosed", "workid", "Success"])
def test_missing_required_field_is_a_protocol_error(missing: str) -> None:
    body = answer()
    del body["data"][missing]
    with pytest.raises(ProtocolError, match=missing):
        read_answer(body, "12345")


@pytest.mark.parametrize("subtopic", ["CheckTaskStatus", "checktaskstate", None, 1])
def test_another_subtopic_is_a_protocol_error(subtopic: object) -> None:
    body = answer()
    body["subtopic"] = subtopic
    with pytest.raises(ProtocolError, match="subtopic"):
        read_answer(body, "12345")


def test_missing_subtopic_is_a_protocol_error() -> None:
    body = answer()
    del body["subtopic"]
    with pytest.raises(ProtocolError, match="subtopic"):
        read_answer(body, "12345")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'"closed"', b"null", b"\xff\xfe{}", "{", b'{"a": 1'],
)
def test_non_json_or_non_object_bodies_are_protocol_errors(body: bytes | str) -> None:
    with pytest.raises(ProtocolError):
        read_answer(body, "12345")


def test_payload_that_is_not_an_object_is_a_protocol_error() -> None:
    body = answer()
    body["data"] = ["isClosed", True]
    with pytest.raises(ProtocolError, match="payload"):
        read_answer(body, "12345")


def test_deeply_nested_json_is_a_protocol_error_not_a_crash() -> None:
    with pytest.raises(ProtocolError):
        read_answer(b"[" * 100_000 + b"]" * 100_000, "12345", max_bytes=10**6)


def test_oversized_body_is_refused() -> None:
    body = json.dumps(answer(padding="x" * 70_000)).encode()
    with pytest.raises(ProtocolError, match="limit"):
        read_answer(body, "12345")


def test_extra_fields_are_ignored_and_kept_for_logging() -> None:
    body = answer(trace="abc")
    body["data"]["queue"] = "billing"
    parsed = parse_response(body, "12345")
    assert parsed.data.is_closed is True
    assert parsed.data.workid == "12345"
    assert parsed.model_extra == {"trace": "abc"}
    assert parsed.data.model_extra == {"queue": "billing"}


def test_parsed_envelope_is_frozen() -> None:
    parsed = parse_response(answer(), "12345")
    with pytest.raises(Exception, match="frozen"):
        parsed.subtopic = "x"  # type: ignore[misc]


# -- random bodies never read as "closed" unless they say so -----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payload_keys = st.sampled_from(["isClosed", "workid", "Success", "ErrorMessage", "other"])
payloads = st.dictionaries(
    payload_keys,
    json_values | st.sampled_from([True, "true", "TRUE", "12345", 12345, "54321"]),
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "subtopic": st.sampled_from(["CheckTaskState", "Other"]) | json_values,
        "data": payloads | json_values,
        "message": payloads | json_values,
        "channel": json_values,
    },
)


def _really_closed(envelope: dict[str, Any], workid: str) -> bool:
    if envelope.get("subtopic") != "CheckTaskState":
        return False
    data, message = envelope.get("data"), envelope.get("message")
    if data is not None and message is not None and data != message:
        return False
    payload = data if data is not None else message
    if not isinstance(payload, dict):
        return False

    def true(value: object) -> bool:
        return value is True or (isinstance(value, str) and value.lower() == "true")

    answered = payload.get("workid")
    same = (type(answered) is str and answered == workid) or (
        type(answered) is int and str(answered) == workid
    )
    return same and true(payload.get("Success")) and true(payload.get("isClosed"))


@settings(max_examples=500, deadline=None)
@given(envelopes)
def test_random_envelopes_are_closed_only_when_they_say_so(envelope: dict[str, Any]) -> None:
    try:
        closed = read_answer(json.dumps(envelope), "12345")
    except (ProtocolError, ServiceError):
        closed = False
    assert closed == _really_closed(envelope, "12345")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_read_as_closed(body: bytes) -> None:
    try:
        closed = read_answer(body, "12345")
    except (ProtocolError, ServiceError):
        return
    assert closed is False or _really_closed(json.loads(body), "12345")
