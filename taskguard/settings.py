"""``TaskGuardSettings``: every knob, read from ``TASKGUARD_*`` environment variables.

Each value is checked when the settings are built; a bad one is rejected with a
message that names the setting (pydantic's ``ValidationError``, a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskguard.cache.clients import redacted_url
from taskguard.state import OnError

__all__ = ["TaskGuardSettings"]

PositiveSeconds = Annotated[float, Field(gt=0)]


class TaskGuardSettings(BaseSettings):
    """Settings for a guard. Environment variables are ``TASKGUARD_`` + the field
    name in capitals (``TASKGUARD_SERVICE_URL``, ``TASKGUARD_CLOSED_TTL``...)."""

    model_config = SettingsConfigDict(
        env_prefix="TASKGUARD_",
        frozen=True,
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,  # an invalid auth_token must not be echoed back
    )

    # The connector and the wire envelope.
    source: str = Field("taskguard", min_length=1, description="registered application name")
    service_url: str | None = Field(None, description="CheckTaskState endpoint (http/https)")
    auth_token: SecretStr | None = Field(None, description="sent as a bearer token")
    request_timeout: PositiveSeconds = Field(5.0, description="one HTTP attempt, seconds")
    channel: str = Field("Salesforce", min_length=1)
    topic: str = Field("Call", min_length=1)
    max_response_bytes: int = Field(64 * 1024, ge=1024, description="larger answers are refused")

    # The caches.
    redis_url: str | None = Field(None, description="unset: in-memory cache only")
    redis_timeout: PositiveSeconds = Field(0.5, description="one Redis command, seconds")
    redis_breaker_cooldown: PositiveSeconds = Field(
        2.0, description="after a Redis failure, skip Redis this long, then probe"
    )
    key_prefix: str = Field("taskguard", min_length=1, max_length=128)
    closed_ttl: PositiveSeconds = Field(604800.0, description="Redis lifetime of a closed workid")
    open_ttl: float = Field(0.0, ge=0, description="reuse an open answer this long; 0: never")
    local_cache_size: int = Field(10000, ge=0, description="in-process entries; 0: tier off")
    local_cache_ttl: PositiveSeconds = Field(300.0, description="in-process lifetime, seconds")

    # Retrying lookups.
    retry_attempts: int = Field(4, ge=1, description="attempts per lookup")
    retry_backoff: float = Field(0.1, ge=0, description="first backoff, seconds")
    retry_backoff_max: float = Field(2.0, ge=0, description="largest backoff, seconds")
    retry_deadline: PositiveSeconds = Field(10.0, description="a lookup never takes longer")
    lookup_concurrency: int = Field(64, ge=1, le=1024, description="service calls in flight")
    service_breaker_failures: int = Field(
        5, ge=0, description="failed lookups in a row that open the service breaker; 0: off"
    )
    service_breaker_cooldown: PositiveSeconds = Field(
        10.0, description="how long the open service breaker refuses lookups"
    )

    # What handler faces do when a lookup fails.
    on_error: OnError = Field(OnError.RAISE, description="raise, process or skip")

    @field_validator("service_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"service_url must be an http:// or https:// URL with a host, not {value!r}"
            )
        _check_port(value, "service_url")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("redis_url unix:// needs a socket path")
            return value
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(
                "redis_url must look like redis://host:6379/0, rediss://... or unix:///path, "
                f"not {_without_password(value)!r}"
            )
        _check_port(value, "redis_url")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("key_prefix must not contain whitespace or control characters")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> TaskGuardSettings:
        if self.retry_backoff_max < self.retry_backoff:
            raise ValueError(
                f"retry_backoff_max ({self.retry_backoff_max}) must be >= "
                f"retry_backoff ({self.retry_backoff})"
            )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() end up in logs: passwords in the URLs are shown as ***,
        # like auth_token (model_dump() still returns the values as given).
        for name, value in super().__repr_args__():
            if name in ("service_url", "redis_url") and isinstance(value, str):
                value = redacted_url(value)
            yield name, value

    def auth_header(self) -> dict[str, str]:
        """The ``Authorization`` header for the HTTP transport (empty without a token)."""
        if self.auth_token is None or not self.auth_token.get_secret_value():
            return {}
        return {"Authorization": f"Bearer {self.auth_token.get_secret_value()}"}


def _check_port(url: str, name: str) -> None:
    try:
        urlsplit(url).port  # noqa: B018 - urllib raises ValueError on a port out of range
    except ValueError:
        raise ValueError(f"{name} has an invalid port: {_without_password(url)!r}") from None


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
