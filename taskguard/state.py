"""The answer values: :class:`TaskState`, :class:`Origin`, and workid validation.

These sit on the hot path (a batch builds a thousand of them), so they are a
tuple subclass and a plain function, not pydantic models.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import NamedTuple

from taskguard.errors import InvalidWorkId

__all__ = [
    "MAX_WORKID_LENGTH",
    "OnError",
    "Origin",
    "TaskState",
    "as_on_error",
    "validate_workid",
    "validate_workids",
]

MAX_WORKID_LENGTH = 256

# C0 and C1 control characters. Other non-printable characters (format marks,
# unusual spaces) are legal in a workid: the seed only says "String".
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOO_BIG_INT = 10**MAX_WORKID_LENGTH


class Origin(str, enum.Enum):
    """Which tier answered a check. Compares equal to its string value."""

    LOCAL = "local"
    REDIS = "redis"
    SERVICE = "service"
    ERROR = "error"  # made up by the "skip"/"process" policy after a failed lookup

    def __str__(self) -> str:
        return self.value


class OnError(str, enum.Enum):
    """What a handler face does when the lookup fails (DESIGN section 2)."""

    RAISE = "raise"
    PROCESS = "process"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


def as_on_error(value: OnError | str) -> OnError:
    """``value`` as an :class:`OnError`, or a ValueError naming the choices."""
    try:
        return OnError(value)
    except ValueError:
        raise ValueError(f"on_error must be 'raise', 'process' or 'skip', not {value!r}") from None


class TaskState(NamedTuple):
    """What taskguard knows about one task.

    ``closed`` is True only when the CheckTaskState service confirmed the close
    (now or earlier, from a cache). ``origin`` says which tier answered.
    """

    workid: str
    closed: bool
    origin: Origin

    def __repr__(self) -> str:
        return (
            f"TaskState(workid={self.workid!r}, closed={self.closed}, origin={self.origin.value!r})"
        )


def validate_workid(workid: object) -> str:
    """Return ``workid`` as the string sent on the wire, or raise :class:`InvalidWorkId`.

    Accepted: a non-blank ``str`` of at most 256 characters without control
    characters, or an ``int`` (not a ``bool``), sent as its decimal string.
    """
    if type(workid) is str:
        # Fast path: one C call per condition, no regex, for the usual workid.
        if 0 < len(workid) <= MAX_WORKID_LENGTH and workid.isprintable() and not workid.isspace():
            return workid
        return _check_str(workid)
    if type(workid) is int:
        if -_TOO_BIG_INT < workid < _TOO_BIG_INT:
            return str(workid)
        raise InvalidWorkId(
            f"workid is an int longer than {MAX_WORKID_LENGTH} digits", workid=workid
        )
    return _check_other(workid)


def validate_workids(workids: Iterable[object]) -> list[str]:
    """:func:`validate_workid` over many workids (a batch), in order."""
    # The fast path of validate_workid, inlined: for a batch of a thousand plain
    # workids a function call each is a third of the validation's cost.
    return [
        w
        if type(w) is str
        and 0 < len(w) <= MAX_WORKID_LENGTH
        and w.isprintable()
        and not w.isspace()
        else validate_workid(w)
        for w in workids
    ]


def _check_str(workid: str) -> str:
    if not workid:
        raise InvalidWorkId("workid is empty; pass the task's non-voice workid", workid=workid)
    if len(workid) > MAX_WORKID_LENGTH:
        raise InvalidWorkId(
            f"workid is {len(workid)} characters long; at most {MAX_WORKID_LENGTH} are allowed",
            workid=workid,
        )
    if workid.isspace():
        raise InvalidWorkId("workid is blank (only whitespace)", workid=workid)
    match = _CONTROL.search(workid)
    if match is not None:
        raise InvalidWorkId(
            f"workid contains the control character {match.group()!r} at position {match.start()}",
            workid=workid,
        )
    try:
        workid.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no Redis key or JSON text can hold it
        raise InvalidWorkId(
            f"workid contains the lone surrogate {workid[exc.start]!r} at position "
            f"{exc.start}; it is not valid Unicode text",
            workid=workid,
        ) from None
    return workid  # printable by our definition: only exotic non-control characters


def _check_other(workid: object) -> str:
    if workid is None:
        raise InvalidWorkId("workid is None; pass the task's non-voice workid", workid=workid)
    if isinstance(workid, bool):
        raise InvalidWorkId(f"workid is the bool {workid!r}; pass a str or an int", workid=workid)
    if isinstance(workid, str):  # a str subclass (a str enum, say): use its plain value
        return validate_workid(str.__str__(workid))
    if isinstance(workid, int):
        return validate_workid(int(workid))
    raise InvalidWorkId(
        f"workid must be a str or an int, not {type(workid).__name__}", workid=workid
    )
