"""The CheckTaskState wire protocol: envelopes and the rules for reading an answer.

Request (sent)::

    {"channel": "Salesforce", "topic": "Call", "subtopic": "CheckTaskState",
     "source": "myapp", "data": {"workid": "12345"}}

Response (read)::

    {"channel": "Salesforce", "topic": "Call", "subtopic": "CheckTaskState",
     "data": {"isClosed": true, "workid": "12345", "Success": true, "ErrorMessage": null}}

The seed disagrees with itself in places; the rules (DESIGN section 1) are:

* the payload key is ``data`` or ``message``; both present and different: error;
* ``isClosed`` / ``Success`` are JSON booleans or the strings "true"/"false" in
  any case; anything else is an error;
* ``Success: false`` is a :class:`ServiceError` carrying ``ErrorMessage``;
* a missing ``isClosed``, ``workid``, ``Success`` or ``subtopic``, another
  subtopic, or another task's workid (compared as strings) is a
  :class:`ProtocolError`: an answer that cannot be verified is not an answer;
* extra fields are ignored (kept on the parsed envelope for logging).

This module does no I/O. :func:`read_answer` is the guard's hot path and
returns a bool; :func:`parse_response` returns the full frozen envelope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskguard.errors import ProtocolError, ServiceError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "SUBTOPIC",
    "CheckTaskStateRequest",
    "CheckTaskStateResponse",
    "RequestData",
    "RequestFactory",
    "ResponseData",
    "decode_body",
    "parse_response",
    "read_answer",
]

SUBTOPIC = "CheckTaskState"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024

_TRUE_FALSE = {"true": True, "false": False}


class RequestData(BaseModel):
    """The request's ``data`` object."""

    model_config = ConfigDict(frozen=True)
    workid: str


class CheckTaskStateRequest(BaseModel):
    """The request envelope taskguard sends."""

    model_config = ConfigDict(frozen=True)
    channel: str = "Salesforce"
    topic: str = "Call"
    subtopic: str = SUBTOPIC
    source: str
    data: RequestData


class ResponseData(BaseModel):
    """The response's payload, after the parsing rules. Extra fields are kept."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)
    is_closed: bool | None = Field(None, alias="isClosed")
    workid: str | None = None
    success: bool = Field(alias="Success")
    error_message: str | None = Field(None, alias="ErrorMessage")


class CheckTaskStateResponse(BaseModel):
    """A response envelope that passed every rule of the protocol."""

    model_config = ConfigDict(frozen=True, extra="allow")
    channel: str | None = None
    topic: str | None = None
    subtopic: str = SUBTOPIC
    data: ResponseData


class RequestFactory:
    """Builds request envelopes for one guard: the fixed fields are set once."""

    __slots__ = ("_channel", "_source", "_topic")

    def __init__(self, *, source: str, channel: str = "Salesforce", topic: str = "Call") -> None:
        self._source = source
        self._channel = channel
        self._topic = topic

    def __call__(self, workid: str) -> dict[str, Any]:
        """The request envelope for ``workid`` as a JSON-ready dict."""
        return {
            "channel": self._channel,
            "topic": self._topic,
            "subtopic": SUBTOPIC,
            "source": self._source,
            "data": {"workid": workid},
        }

    def encode(self, workid: str) -> bytes:
        """The request envelope for ``workid`` as JSON bytes."""
        return json.dumps(self(workid), separators=(",", ":")).encode()


def decode_body(
    body: bytes | bytearray | str | Mapping[str, Any],
    workid: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Mapping[str, Any]:
    """Turn a response body into the envelope mapping, or raise :class:`ProtocolError`."""
    if isinstance(body, Mapping):
        return body
    if isinstance(body, (bytes, bytearray)):
        if len(body) > max_bytes:
            raise _too_large(workid, len(body), max_bytes)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"CheckTaskState answer for workid {workid!r} is not valid UTF-8",
                workid=workid,
            ) from exc
    elif isinstance(body, str):
        if len(body) > max_bytes:
            raise _too_large(workid, len(body), max_bytes)
        text = body
    else:
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} is a {type(body).__name__}, "
            "expected JSON text or a mapping",
            workid=workid,
        )
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} is not JSON", workid=workid, body=text
        ) from exc
    if not isinstance(envelope, dict):
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} is a JSON "
            f"{type(envelope).__name__}, expected an object",
            workid=workid,
            body=envelope,
        )
    return envelope


def read_answer(
    body: bytes | bytearray | str | Mapping[str, Any],
    workid: str,
    *,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> bool:
    """Apply every rule to a response for ``workid``; return True when it is closed.

    Raises :class:`ProtocolError` for a malformed answer or one about another
    task, and :class:`ServiceError` for ``Success: false``.
    """
    envelope = decode_body(body, workid, max_bytes=max_bytes)
    payload = _payload(envelope, workid)
    return _closed(payload, workid, envelope)


def parse_response(
    body: bytes | bytearray | str | Mapping[str, Any],
    workid: str,
    *,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> CheckTaskStateResponse:
    """Like :func:`read_answer`, but return the whole envelope as a frozen model."""
    envelope = decode_body(body, workid, max_bytes=max_bytes)
    payload = _payload(envelope, workid)
    closed = _closed(payload, workid, envelope)
    extra_payload = {
        k: v
        for k, v in payload.items()
        if k not in ("isClosed", "workid", "Success", "ErrorMessage")
    }
    data = ResponseData.model_construct(
        is_closed=closed,
        workid=workid,
        success=True,
        error_message=_error_message(payload),
        **extra_payload,
    )
    extra = {
        k: v
        for k, v in envelope.items()
        if k not in ("channel", "topic", "subtopic", "data", "message")
    }
    return CheckTaskStateResponse.model_construct(
        channel=_opt_str(envelope.get("channel")),
        topic=_opt_str(envelope.get("topic")),
        subtopic=SUBTOPIC,
        data=data,
        **extra,
    )


def _payload(envelope: Mapping[str, Any], workid: str | None) -> Mapping[str, Any]:
    subtopic = envelope.get("subtopic")
    if subtopic != SUBTOPIC:
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} has subtopic {subtopic!r}, "
            f"expected {SUBTOPIC!r}",
            workid=workid,
            body=envelope,
        )
    data = envelope.get("data")
    message = envelope.get("message")
    if data is None and message is None:
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} has neither 'data' nor 'message'",
            workid=workid,
            body=envelope,
        )
    if data is not None and message is not None and _differ(data, message):
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} has both 'data' and 'message' "
            "and they differ",
            workid=workid,
            body=envelope,
        )
    payload = data if data is not None else message
    if not isinstance(payload, dict):
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r}: the payload is a "
            f"{type(payload).__name__}, expected an object",
            workid=workid,
            body=envelope,
        )
    return payload


def _differ(data: object, message: object) -> bool:
    # Payloads nested too deeply to compare (a transport can hand over any mapping)
    # cannot be checked against each other: that is a protocol error, not a crash.
    try:
        return bool(data != message)
    except RecursionError:
        return True


def _closed(payload: Mapping[str, Any], workid: str, envelope: Mapping[str, Any]) -> bool:
    success = _boolean(payload, "Success", workid, envelope)
    if "workid" in payload:
        _same_workid(payload["workid"], workid, envelope)
    if not success:
        message = _error_message(payload)
        raise ServiceError(
            f"CheckTaskState could not answer for workid {workid!r}: "
            f"{message or 'the service gave no ErrorMessage'}",
            workid=workid,
            error_message=message,
        )
    if "workid" not in payload:
        raise ProtocolError(
            f"CheckTaskState answer for workid {workid!r} has no 'workid'; "
            "it cannot be checked against the request",
            workid=workid,
            body=envelope,
        )
    return _boolean(payload, "isClosed", workid, envelope)


def _boolean(payload: Mapping[str, Any], key: str, workid: str, envelope: object) -> bool:
    value = payload.get(key)
    if value is True or value is False:
        return value
    if isinstance(value, str):
        parsed = _TRUE_FALSE.get(value.lower())
        if parsed is not None:
            return parsed
    what = "is missing" if value is None else f"is {value!r}"
    raise ProtocolError(
        f"CheckTaskState answer for workid {workid!r}: {key!r} {what}, expected true or false",
        workid=workid,
        body=envelope,
    )


def _same_workid(answered: object, workid: str, envelope: object) -> None:
    # 12345 and "12345" are the same task; True, 12345.0 and None are not.
    if type(answered) is str:
        same = answered == workid
    elif type(answered) is int:
        same = str(answered) == workid
    else:
        same = False
    if not same:
        raise ProtocolError(
            f"CheckTaskState answered about workid {answered!r} when asked about {workid!r}; "
            "the answer is ignored",
            workid=workid,
            body=envelope,
        )


def _error_message(payload: Mapping[str, Any]) -> str | None:
    message = payload.get("ErrorMessage")
    return None if message is None else str(message)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _too_large(workid: str | None, size: int, limit: int) -> ProtocolError:
    return ProtocolError(
        f"CheckTaskState answer for workid {workid!r} is {size} bytes; "
        f"more than the {limit}-byte limit (max_response_bytes)",
        workid=workid,
    )
