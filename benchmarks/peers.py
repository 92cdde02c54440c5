"""The peer measured in the same run: AWS Lambda Powertools idempotency.

Its ``@idempotent_function`` with the Redis persistence layer
(``RedisCachePersistenceLayer``) is the closest off-the-shelf answer to "has
this task been dealt with already?": a repeated call with the same key returns
the stored result without running the function, which is what taskguard's
skip path does for a closed workid.

* With ``use_local_cache=True`` a repeat is answered from its in-process LRU.
* Without it a repeat costs three Redis round trips: ``SET NX`` (refused: the
  record exists), ``GET`` to inspect it, ``GET`` again to return it.

The package (and boto3, which its idempotency module imports) comes with the
``bench`` extra. When it cannot be imported the peer figures say so in the
table instead of disappearing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["PeerUnavailable", "powertools_hit", "powertools_version"]


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message says why (shown in the table)."""


def powertools_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("aws-lambda-powertools")
    except Exception:
        return None


def powertools_hit(
    host: str, port: int, *, local_cache: bool, workid: str
) -> Callable[[dict[str, str]], Any]:
    """A Powertools-idempotent function on the given Redis, already called once
    for ``workid`` (so the next calls are hits). Call it with ``{"workid": ...}``.

    Raises :class:`PeerUnavailable` when Powertools (or boto3) is missing.
    """
    try:
        import redis
        from aws_lambda_powertools.utilities.idempotency import (
            IdempotencyConfig,
            idempotent_function,
        )
        from aws_lambda_powertools.utilities.idempotency.persistence.redis import (
            RedisCachePersistenceLayer,
        )
    except ImportError as exc:
        raise PeerUnavailable(
            f"aws-lambda-powertools not importable ({exc}); pip install -e '.[bench]'"
        ) from exc

    # Powertools' own default client is built with decode_responses=True.
    client = redis.Redis(host=host, port=port, decode_responses=True)
    with warnings.catch_warnings():
        # RedisCachePersistenceLayer is marked deprecated in favour of its alias
        # CachePersistenceLayer (the same class); the warning is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = RedisCachePersistenceLayer(client=client)
    config = IdempotencyConfig(event_key_jmespath="workid", use_local_cache=local_cache)

    @idempotent_function(data_keyword_argument="task", persistence_store=layer, config=config)
    def handle(task: dict[str, str]) -> dict[str, bool]:
        return {"processed": True}

    def call(task: dict[str, str]) -> Any:
        return handle(task=task)

    # Outside Lambda there is no context to read the remaining time from; the
    # warning about it says nothing about the figures.
    warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")
    first = call({"workid": workid})  # stores the COMPLETED record
    if first != {"processed": True} or call({"workid": workid}) != first:
        raise PeerUnavailable("Powertools idempotency did not return the stored result")
    return call
