"""Workid validation and the answer values."""

from __future__ import annotations

import enum

import pytest

from taskguard import InvalidWorkId, Origin, TaskGuardError, TaskState
from taskguard.state import validate_workid


class Colour(str, enum.Enum):
    RED = "red-1"


class Number(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("12345", "12345"),
        (12345, "12345"),
        (0, "0"),
        ("W-1/2 x", "W-1/2 x"),
        ("*", "*"),
        ("ünïcødé✓", "ünïcødé✓"),
        ("a" * 256, "a" * 256),
        ("zero\u200bwidth", "zero\u200bwidth"),  # a format char, not a control char
        (Colour.RED, "red-1"),
        (Number.ONE, "1"),
    ],
)
def test_valid_workids_are_sent_as_strings(given: object, sent: str) -> None:
    assert validate_workid(given) == sent
    assert type(validate_workid(given)) is str


@pytest.mark.parametrize(
    ("given", "why"),
    [
        (None, "None"),
        ("", "empty"),
        ("   ", "blank"),
        ("\t\n", "blank"),
        ("\xa0", "blank"),
        ("a" * 257, "257 characters"),
        ("abc\x00", "control"),
        ("ab\ncd", "control"),
        ("ab\x7f", "control"),
        ("ab\x85", "control"),
        (True, "bool"),
        (False, "bool"),
        (1.5, "float"),
        (b"123", "bytes"),
        (["1"], "list"),
        (10**300, "digits"),
    ],
)
def test_invalid_workids_raise_a_clear_error(given: object, why: str) -> None:
    with pytest.raises(InvalidWorkId, match=why) as info:
        validate_workid(given)
    assert isinstance(info.value, TaskGuardError)
    assert isinstance(info.value, ValueError)


def test_taskstate_is_an_immutable_value() -> None:
    state = TaskState("1", True, Origin.SERVICE)
    assert state.origin == "service"
    assert state == TaskState("1", True, Origin.SERVICE)
    with pytest.raises(AttributeError):
        state.closed = False  # type: ignore[misc]
    assert "origin='service'" in repr(state)
    assert str(Origin.REDIS) == "redis"
