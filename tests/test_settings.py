"""TaskGuardSettings: defaults, the environment, and validation naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskguard import OnError, TaskGuardSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TASKGUARD_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_documented_ones() -> None:
    s = TaskGuardSettings()
    assert (s.source, s.service_url, s.auth_token) == ("taskguard", None, None)
    assert (s.request_timeout, s.channel, s.topic) == (5.0, "Salesforce", "Call")
    assert (s.redis_url, s.redis_timeout, s.key_prefix) == (None, 0.5, "taskguard")
    assert (s.closed_ttl, s.open_ttl) == (604800, 0)
    assert (s.local_cache_size, s.local_cache_ttl) == (10000, 300)
    assert (s.retry_attempts, s.retry_backoff, s.retry_backoff_max) == (4, 0.1, 2.0)
    assert s.retry_deadline == 10.0
    assert s.on_error is OnError.RAISE


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKGUARD_SERVICE_URL", "http://127.0.0.1:8765/x")
    monkeypatch.setenv("TASKGUARD_CLOSED_TTL", "60")
    monkeypatch.setenv("TASKGUARD_ON_ERROR", "skip")
    monkeypatch.setenv("TASKGUARD_AUTH_TOKEN", "s3cret-token")
    s = TaskGuardSettings()
    assert s.service_url == "http://127.0.0.1:8765/x"
    assert s.closed_ttl == 60
    assert s.on_error is OnError.SKIP
    assert s.auth_header() == {"Authorization": "Bearer s3cret-token"}


def test_auth_token_is_a_secret_never_shown() -> None:
    s = TaskGuardSettings(auth_token="s3cret-token")
    assert "s3cret-token" not in repr(s)
    assert "s3cret-token" not in str(s)
    assert "s3cret-token" not in s.model_dump_json()


def test_no_token_no_header() -> None:
    assert TaskGuardSettings().auth_header() == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("closed_ttl", 0),
        ("closed_ttl", -1),
        ("open_ttl", -1),
        ("local_cache_ttl", 0),
        ("local_cache_size", -1),
        ("retry_attempts", 0),
        ("request_timeout", 0),
        ("request_timeout", -0.5),
        ("redis_timeout", 0),
        ("retry_deadline", 0),
        ("on_error", "ignore"),
        ("service_url", "ftp://example/x"),
        ("service_url", "not a url"),
        ("service_url", "http://"),
        ("service_url", "http://127.0.0.1:99999/x"),
        ("redis_url", "http://127.0.0.1:6379"),
        ("redis_url", "localhost:6379"),
        ("key_prefix", ""),
        ("key_prefix", "has space"),
        ("source", ""),
    ],
)
def test_bad_values_are_rejected_naming_the_setting(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        TaskGuardSettings(**{field: value})
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def test_backoff_max_below_backoff_is_rejected() -> None:
    with pytest.raises(ValidationError, match="retry_backoff_max"):
        TaskGuardSettings(retry_backoff=1.0, retry_backoff_max=0.5)


def test_bad_environment_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKGUARD_RETRY_ATTEMPTS", "zero")
    with pytest.raises(ValidationError, match="retry_attempts"):
        TaskGuardSettings()


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError, match="closed_tll"):
        TaskGuardSettings(closed_tll=5)  # type: ignore[call-arg]


def test_redis_password_is_not_echoed_in_errors() -> None:
    with pytest.raises(ValidationError) as info:
        TaskGuardSettings(redis_url="http://user:hunter2@127.0.0.1:6379")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://u:p@127.0.0.1:6380/1", "unix:///tmp/r.sock"]
)
def test_redis_urls_accepted(url: str) -> None:
    assert TaskGuardSettings(redis_url=url).redis_url == url


def test_settings_are_frozen() -> None:
    s = TaskGuardSettings()
    with pytest.raises(ValidationError):
        s.closed_ttl = 5  # type: ignore[misc]
