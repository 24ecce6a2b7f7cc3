"""`${NAME}` in Redis URLs: filled from the environment where the connection opens, never at
validation, with errors that name the variable and no secret (serve_app/core/env.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.core.env import EnvExpansionError, env_placeholders, expand_env
from serve_app.settings import AppSettings, CacheSettings, StoreSettings

SECRET = "s3cr3t-4b1d"
URL = "redis://:${MEMSERVE_TEST_PW}@redis:6379/0"


def test_a_placeholder_is_filled_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSERVE_TEST_PW", SECRET)
    assert expand_env(URL) == f"redis://:{SECRET}@redis:6379/0"
    monkeypatch.setenv("MEMSERVE_TEST_HOST", "cache.internal")
    assert expand_env("redis://:${MEMSERVE_TEST_PW}@${MEMSERVE_TEST_HOST}:6379/${MEMSERVE_TEST_PW}") == (
        f"redis://:{SECRET}@cache.internal:6379/{SECRET}"
    )
    assert expand_env(URL, environ={"MEMSERVE_TEST_PW": "other"}) == "redis://:other@redis:6379/0"


def test_a_set_but_empty_variable_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSERVE_TEST_PW", "")
    assert expand_env(URL) == "redis://:@redis:6379/0"


def test_a_missing_variable_is_named_and_no_secret_is_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("MEMSERVE_TEST_PW", raising=False)
    monkeypatch.setenv("MEMSERVE_TEST_USER", SECRET)  # another placeholder of the URL, set
    url = "redis://${MEMSERVE_TEST_USER}:${MEMSERVE_TEST_PW}@redis:6379/0"
    with pytest.raises(EnvExpansionError) as caught:
        expand_env(url, "store.redis_url")
    message = str(caught.value)
    assert "MEMSERVE_TEST_PW" in message and "store.redis_url" in message
    assert "MEMSERVE_TEST_USER" not in message  # only what is missing
    assert SECRET not in message and SECRET not in repr(caught.value)
    assert "redis://" not in message  # the URL itself is never echoed
    assert caught.value.__context__ is None  # no KeyError carrying a name or value along
    assert isinstance(caught.value, ValueError)
    assert SECRET not in caplog.text  # nothing logged, let alone the value


def test_every_missing_variable_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEMSERVE_TEST_A", "MEMSERVE_TEST_B"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(EnvExpansionError, match=r"variables MEMSERVE_TEST_A, MEMSERVE_TEST_B,"):
        expand_env("${MEMSERVE_TEST_A}${MEMSERVE_TEST_B}${MEMSERVE_TEST_A}")


def test_a_url_without_placeholders_is_unchanged() -> None:
    for url in ("redis://127.0.0.1:6379/0", "redis://:plain-password@redis:6379/1", "", "rediss://u:p@h/0?a=b&c=%24"):
        assert expand_env(url, environ={}) == url
        assert env_placeholders(url) == []


def test_double_dollar_is_a_literal_dollar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSERVE_TEST_PW", SECRET)
    assert expand_env("redis://:pa$$word@redis:6379/0", environ={}) == "redis://:pa$word@redis:6379/0"
    assert expand_env("$${MEMSERVE_TEST_PW}", environ={}) == "${MEMSERVE_TEST_PW}"  # escaped, not expanded
    assert expand_env("$$$${MEMSERVE_TEST_PW}") == "$${MEMSERVE_TEST_PW}"
    assert expand_env("$$${MEMSERVE_TEST_PW}") == f"${SECRET}"
    # A value is inserted as is: a `$` in it is not expanded again.
    assert expand_env("${MEMSERVE_TEST_X}", environ={"MEMSERVE_TEST_X": "$${Y}"}) == "$${Y}"


@pytest.mark.parametrize("text", ["redis://:$MEMSERVE_TEST_PW@h/0", "pa$word", "trailing$", "${}", "${1X}", "${A"])
def test_any_other_dollar_is_an_error_that_shows_no_text(text: str) -> None:
    with pytest.raises(EnvExpansionError, match=r"cache\.redis_url: '\$' at position \d+") as caught:
        expand_env(text, "cache.redis_url", environ={"MEMSERVE_TEST_PW": SECRET, "A": SECRET})
    assert text not in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(EnvExpansionError):
        env_placeholders(text)


def test_placeholders_are_listed_without_reading_the_environment() -> None:
    assert env_placeholders("redis://${U}:${P}@h/$${Q}") == ["U", "P"]


# ---------------------------------------------------------------- the settings


def test_validation_keeps_the_placeholder_and_needs_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMSERVE_TEST_PW", raising=False)
    args = {"store": {"backend": "redis", "redis_url": URL}, "cache": {"backend": "redis", "redis_url": URL}}
    settings = AppSettings.model_validate(args)  # as in Serve's controller: no variable there
    assert settings.store.redis_url == URL and settings.cache.redis_url == URL
    monkeypatch.setenv("MEMSERVE_TEST_PW", SECRET)
    settings = AppSettings.model_validate(args)
    assert SECRET not in settings.model_dump_json() and SECRET not in repr(settings)
    assert settings.store.resolved_redis_url() == f"redis://:{SECRET}@redis:6379/0"
    assert settings.cache.resolved_redis_url() == f"redis://:{SECRET}@redis:6379/0"
    assert SECRET not in settings.model_dump_json()  # resolving stores nothing


def test_a_malformed_placeholder_fails_validation() -> None:
    for section in (StoreSettings, CacheSettings):
        with pytest.raises(ValidationError, match=r"redis_url: '\$' at position 9"):
            section.model_validate({"redis_url": "redis://:$MEMSERVE_TEST_PW@redis:6379/0"})
    with pytest.raises(ValidationError, match=r"store\.redis_url"):
        AppSettings.model_validate({"store": {"redis_url": "redis://:${MEMSERVE_TEST_PW@redis:6379/0"}})


def test_no_url_resolves_to_none() -> None:
    assert StoreSettings().resolved_redis_url() is None
    assert CacheSettings().resolved_redis_url() is None


def test_open_store_expands_only_for_redis_and_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEMSERVE_TEST_PW", raising=False)
    # SQLite: a Redis URL left in the config is not needed, so its variable is not either.
    def settings(backend: str) -> AppSettings:
        return AppSettings.model_validate({"data_dir": str(tmp_path), "store": {"backend": backend, "redis_url": URL}})

    settings("sqlite").open_store().close()
    redis_store = settings("redis")
    with pytest.raises(EnvExpansionError, match=r"store\.redis_url needs the environment variable MEMSERVE_TEST_PW,"):
        redis_store.open_store()  # before any connection is attempted


def test_the_cache_deployment_expands_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.cache import Cache
    from serve_app.core.redis_cache import RedisCache

    cls = Cache.func_or_class  # the class under @serve.deployment
    monkeypatch.delenv("MEMSERVE_TEST_PW", raising=False)
    settings = CacheSettings(backend="redis", redis_url=URL)
    with pytest.raises(EnvExpansionError, match=r"cache\.redis_url needs the environment variable MEMSERVE_TEST_PW,"):
        cls(settings)
    assert cls(CacheSettings(backend="memory", redis_url=URL))._backend  # memory: the URL is unused
    monkeypatch.setenv("MEMSERVE_TEST_PW", SECRET)
    backend = cls(settings)._backend  # redis-py connects lazily: nothing is reached here
    assert isinstance(backend, RedisCache)
    assert backend.r.connection_pool.connection_kwargs["password"] == SECRET
