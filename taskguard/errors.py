"""The errors taskguard raises: one tree, rooted at :class:`TaskGuardError`.

"The task is closed" is an *answer* (a :class:`~taskguard.TaskState`); every
exception below means "we could not find out", and never counts as closed::

    TaskGuardError                  anything taskguard raises on purpose
     ├── InvalidWorkId (ValueError) the workid is not usable; nothing was touched
     ├── ConfigurationError (ValueError)
     │                              the guard cannot be built as asked
     └── TaskStateUnknown           the service could not give a usable answer
          ├── ProtocolError         the answer is malformed or about another task
          ├── ServiceError          the service said no: ``Success: false`` or HTTP 4xx
          ├── TransportError        one attempt failed on the way (connection, timeout,
          │                         5xx, 429); retried, seldom seen by callers
          └── LookupFailed          every attempt failed or the deadline ran out;
               │                    the last cause is chained (``__cause__``)
               └── CircuitOpen      the service failed so often that the guard stopped
                                    asking for a cool-down; nothing was sent

Every lookup error carries the ``workid`` it was about. Messages say what to do
and never contain the auth token. Foreign errors (urllib3, aiohttp, redis) are
translated at exactly one boundary each, with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpen",
    "ConfigurationError",
    "InvalidWorkId",
    "LookupFailed",
    "ProtocolError",
    "ServiceError",
    "TaskGuardError",
    "TaskStateUnknown",
    "TransportError",
]


class TaskGuardError(Exception):
    """Base of every error taskguard raises on purpose."""

    workid: str | None = None


class InvalidWorkId(TaskGuardError, ValueError):
    """The workid cannot be used: None, empty, blank, too long, control characters,
    a bool, or a type that is neither str nor int. Raised before any cache or
    network access."""

    def __init__(self, message: str, *, workid: object = None) -> None:
        super().__init__(message)
        self.value = workid


class ConfigurationError(TaskGuardError, ValueError):
    """The guard cannot be built as configured (no service_url and no transport,
    a missing optional dependency, a transport of the wrong kind)."""


class TaskStateUnknown(TaskGuardError):
    """The service could not give a usable answer for ``workid``."""

    def __init__(self, message: str, *, workid: str | None = None) -> None:
        super().__init__(message)
        self.workid = workid


class ProtocolError(TaskStateUnknown):
    """The answer broke the CheckTaskState protocol: not JSON, wrong shape,
    missing fields, another task's workid, another subtopic, or too large.
    Not retried: asking again would not make it well-formed."""

    def __init__(self, message: str, *, workid: str | None = None, body: object = None) -> None:
        super().__init__(message, workid=workid)
        self.body = body


class ServiceError(TaskStateUnknown):
    """The service answered but refused: ``Success: false`` (``error_message``
    holds its ``ErrorMessage``) or an HTTP 4xx other than 429 (``status``).
    Not retried."""

    def __init__(
        self,
        message: str,
        *,
        workid: str | None = None,
        error_message: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, workid=workid)
        self.error_message = error_message
        self.status = status


class TransportError(TaskStateUnknown):
    """One attempt failed on the way to the service. ``retryable`` says whether
    another attempt may help (connection errors, timeouts, 5xx, 429);
    ``retry_after`` is the server's ``Retry-After`` in seconds, if it sent one."""

    def __init__(
        self,
        message: str,
        *,
        workid: str | None = None,
        retryable: bool = True,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, workid=workid)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class LookupFailed(TaskStateUnknown):
    """Every attempt failed, or ``retry_deadline`` ran out. ``attempts`` is how
    many were made; the last cause is chained as ``__cause__``."""

    def __init__(self, message: str, *, workid: str | None = None, attempts: int = 0) -> None:
        super().__init__(message, workid=workid)
        self.attempts = attempts


class CircuitOpen(LookupFailed):
    """The service failed so many lookups in a row that the guard stopped asking
    it for a cool-down; this lookup was not sent at all."""
