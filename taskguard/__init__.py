"""taskguard: skip contact-center tasks the customer already closed.

Before a worker spends effort on a non-voice task (an email, a chat, a case),
taskguard asks the connector's CheckTaskState API whether the customer already
closed it, remembers closed workids (Redis when shared, memory when embedded),
retries failed lookups, and only ever skips a task on a confirmed close.
"""

from __future__ import annotations

from taskguard.aguard import AsyncTaskGuard
from taskguard.default import configure, skip_if_closed
from taskguard.errors import (
    CircuitOpen,
    ConfigurationError,
    InvalidWorkId,
    LookupFailed,
    ProtocolError,
    ServiceError,
    TaskGuardError,
    TaskStateUnknown,
    TransportError,
)
from taskguard.guard import TaskGuard
from taskguard.handlers import TaskHandle
from taskguard.settings import TaskGuardSettings
from taskguard.state import OnError, Origin, TaskState

__version__ = "0.1.0"

__all__ = [
    "AsyncTaskGuard",
    "CircuitOpen",
    "ConfigurationError",
    "InvalidWorkId",
    "LookupFailed",
    "OnError",
    "Origin",
    "ProtocolError",
    "ServiceError",
    "TaskGuard",
    "TaskGuardError",
    "TaskGuardSettings",
    "TaskHandle",
    "TaskState",
    "TaskStateUnknown",
    "TransportError",
    "__version__",
    "configure",
    "skip_if_closed",
]
