"""Settings parsing: Heroku-style URLs, TLS Redis, derived URLs, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from erp.core.celery_app import celery_config
from erp.core.config import Settings, describe_validation_error
from tests.support.processes import REPO_ROOT


@pytest.fixture(autouse=True)
def _no_settings_in_environment(monkeypatch):
    """These tests pass every value explicitly; the suite's own environment must not leak in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


BASE = {"DATABASE_URL": "postgresql://u:p@db.example.com:5432/erp", "_env_file": None}


def make(**overrides) -> Settings:
    return Settings(**{**BASE, **overrides})


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db.example.com:5432/erp",
        "postgresql://u:p@db.example.com:5432/erp",
        "postgresql+psycopg2://u:p@db.example.com:5432/erp",
        "postgresql+asyncpg://u:p@db.example.com:5432/erp",
    ],
)
def test_every_postgres_form_gives_both_driver_urls(url):
    settings = make(DATABASE_URL=url)
    assert settings.async_database_url == "postgresql+asyncpg://u:p@db.example.com:5432/erp"
    assert settings.sync_database_url == "postgresql+psycopg2://u:p@db.example.com:5432/erp"


def test_sslmode_is_translated_for_asyncpg():
    settings = make(DATABASE_URL="postgres://u:p@h:5432/d?sslmode=require")
    assert settings.async_database_url.endswith("/d?ssl=require")
    assert settings.sync_database_url.endswith("/d?sslmode=require")


def test_redis_from_parts():
    settings = make(
        REDIS_HOST="cache", REDIS_PORT=6380, REDIS_PASSWORD="s3cret", REDIS_CELERY_BROKER_DB=2, REDIS_CELERY_RESULT_DB=3
    )
    assert settings.broker_url == "redis://:s3cret@cache:6380/2"
    assert settings.result_backend_url == "redis://:s3cret@cache:6380/3"


def test_heroku_tls_url_wins_and_carries_the_certificate_option():
    settings = make(
        REDIS_URL="redis://h:p@plain.example.com:6379",
        REDIS_TLS_URL="rediss://h:p@tls.example.com:6380",
        REDIS_SSL_CERT_REQS="none",
    )
    assert settings.broker_url == "rediss://h:p@tls.example.com:6380/0?ssl_cert_reqs=CERT_NONE"
    assert settings.result_backend_url == "rediss://h:p@tls.example.com:6380/1?ssl_cert_reqs=CERT_NONE"


def test_rediss_defaults_to_verifying_the_certificate():
    assert make(REDIS_URL="rediss://tls.example.com:6380").broker_url.endswith("?ssl_cert_reqs=CERT_REQUIRED")


def test_explicit_celery_urls_are_kept():
    settings = make(CELERY_BROKER_URL="redis://b:6379/5", CELERY_RESULT_BACKEND="redis://r:6379/6")
    assert (settings.broker_url, settings.result_backend_url) == ("redis://b:6379/5", "redis://r:6379/6")


@pytest.mark.parametrize(
    ("overrides", "variable", "fragment"),
    [
        ({"DATABASE_URL": "mysql://u@h/d"}, "DATABASE_URL", "not PostgreSQL"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL", "redis://"),
        ({"TIME_ZONE": "Mars/Olympus"}, "TIME_ZONE", "not an IANA time zone"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT", "less than or equal to 65535"),
        (
            {"CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS": "0"},
            "CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS",
            "greater than 0",
        ),
        (
            {"CELERY_TASK_SOFT_TIME_LIMIT_SECONDS": 400, "CELERY_TASK_TIME_LIMIT_SECONDS": 300},
            "CELERY_TASK_SOFT_TIME_LIMIT_SECONDS",
            "below",
        ),
        ({"ALERT_WEBHOOK_URLS": "https://ok.example.com/x, ftp://files/x"}, "ALERT_WEBHOOK_URLS", "'ftp'://"),
        ({"ALERT_WEBHOOK_URLS": "hooks.slack.com/services/T/B/secret"}, "ALERT_WEBHOOK_URLS", "http:// or https://"),
        ({"ALERT_WEBHOOK_MAX_ATTEMPTS": "0"}, "ALERT_WEBHOOK_MAX_ATTEMPTS", "greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_variable(overrides, variable, fragment):
    with pytest.raises(ValidationError) as caught:
        make(**overrides)
    line = describe_validation_error(caught.value)
    assert variable in line and fragment in line


def test_a_bad_webhook_url_is_not_quoted_since_its_path_is_a_secret():
    with pytest.raises(ValidationError) as caught:
        make(ALERT_WEBHOOK_URLS="hooks.slack.com/services/T/B/secret")
    assert "secret" not in describe_validation_error(caught.value)


def test_webhook_urls_are_split_on_commas():
    assert make(ALERT_WEBHOOK_URLS=" https://a.example.com/1 ,,https://b.example.com/2 ").alert_webhook_urls == [
        "https://a.example.com/1",
        "https://b.example.com/2",
    ]
    assert make().alert_webhook_urls == []


def test_missing_database_url_is_named():
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert describe_validation_error(caught.value) == "DATABASE_URL: is required but not set (see .env.example)"


def test_a_bad_setting_stops_start_up_with_one_line():
    env = {
        "PATH": "/usr/bin:/bin",
        "ERP_ENV_FILE": "/nonexistent",
        "DATABASE_URL": "postgresql://h/d",
        "TIME_ZONE": "Nowhere/Land",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from erp.core.config import get_settings; get_settings()"],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(REPO_ROOT),
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "erp: configuration error: TIME_ZONE: 'Nowhere/Land' is not an IANA time zone (e.g. UTC, Europe/Berlin)"
    )


def test_eager_mode_is_off_by_default():
    settings = make()
    assert settings.CELERY_TASK_ALWAYS_EAGER is False
    assert celery_config(settings)["task_always_eager"] is False


def test_eager_mode_is_refused_outside_development():
    """ERP_ENVIRONMENT defaults to production: a deployment that sets nothing refuses it."""
    for environment in ({}, {"ERP_ENVIRONMENT": "production"}):
        with pytest.raises(ValidationError) as raised:
            make(CELERY_TASK_ALWAYS_EAGER=True, **environment)
        line = describe_validation_error(raised.value)
        assert line.startswith("CELERY_TASK_ALWAYS_EAGER: ") and "needs ERP_ENVIRONMENT=development" in line


def test_eager_mode_in_development_runs_tasks_here_and_stores_their_results():
    config = celery_config(make(CELERY_TASK_ALWAYS_EAGER=True, ERP_ENVIRONMENT="development"))
    assert config["task_always_eager"] is True
    # The status endpoint reads results from the backend; a failure is stored, not raised.
    assert config["task_store_eager_result"] is True
    assert config["task_eager_propagates"] is False
