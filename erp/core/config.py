"""Settings, read once from the environment and `.env` (pydantic-settings).

Every setting is listed in `.env.example` and in the README. A wrong or missing value stops
start-up with one line naming the variable (`load_settings`).

Nothing is read at import: `get_settings()` reads on first use and caches, so a test or a
benchmark sets its environment first (or calls `get_settings.cache_clear()` after changing it)
instead of patching `os.environ` before importing any erp module.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from functools import cached_property
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+asyncpg",
    "postgresql+psycopg",
}
_REDIS_SCHEMES = {"redis", "rediss"}
_CERT_REQS = {"required": "CERT_REQUIRED", "optional": "CERT_OPTIONAL", "none": "CERT_NONE"}


def _replace_scheme(url: str, scheme: str, query: dict[str, str] | None = None) -> str:
    parts = urlsplit(url)
    new_query = parts.query if query is None else urlencode(query)
    return urlunsplit((scheme, parts.netloc, parts.path, new_query, parts.fragment))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    DATABASE_URL: str
    REDIS_URL: str | None = None
    REDIS_TLS_URL: str | None = None
    REDIS_HOST: str = "localhost"
    REDIS_PORT: int = Field(6379, ge=1, le=65535)
    REDIS_PASSWORD: str | None = None
    REDIS_CELERY_BROKER_DB: int = Field(0, ge=0, le=15)
    REDIS_CELERY_RESULT_DB: int = Field(1, ge=0, le=15)
    # Heroku Redis serves TLS with a self-signed certificate: set this to `none` there.
    REDIS_SSL_CERT_REQS: Literal["required", "optional", "none"] = "required"
    CELERY_BROKER_URL: str | None = None
    CELERY_RESULT_BACKEND: str | None = None

    TIME_ZONE: str = "UTC"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `json`: one JSON object per line, for log drains; `text`: one readable line per event.
    LOG_FORMAT: Literal["text", "json"] = "text"

    WEB_CONCURRENCY: int = Field(1, ge=1)
    # The proxies whose X-Forwarded-For uvicorn believes (the Procfile passes it to
    # --forwarded-allow-ips): addresses or networks, comma-separated. Anyone else's header is
    # ignored, so a client cannot choose the address its requests are logged under.
    FORWARDED_ALLOW_IPS: str = "127.0.0.1"
    CELERY_WORKER_CONCURRENCY: int | None = Field(None, ge=1)
    CELERY_TASK_SOFT_TIME_LIMIT_SECONDS: int = Field(300, ge=1)
    CELERY_TASK_TIME_LIMIT_SECONDS: int = Field(360, ge=1)
    CELERY_RESULT_EXPIRES_SECONDS: int = Field(86400, ge=60)
    # After SIGTERM a worker lets running tasks finish for this long, then stops them and puts
    # their messages back on the queue: below Heroku's 30 s between SIGTERM and SIGKILL.
    CELERY_WORKER_SHUTDOWN_GRACE_SECONDS: float = Field(25.0, gt=0, le=3600)
    CELERY_FLOWER_PORT: int = Field(5555, ge=1, le=65535)
    CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS: float = Field(1.0, gt=0, le=60)
    CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS: float = Field(5.0, gt=0, le=300)
    # A run late by at most this much is on time; later, the task's misfire policy decides.
    CELERY_BEAT_MISFIRE_GRACE_SECONDS: float = Field(60.0, ge=0)
    # The most missed runs the `run_all` misfire policy sends for one task after downtime.
    CELERY_BEAT_MAX_CATCH_UP_RUNS: int = Field(10, ge=1, le=1000)
    # A beat that stops answering inside a transaction (frozen, or its host gone) loses its row
    # locks after this long (PostgreSQL ends its session), and another beat takes the rows over.
    CELERY_BEAT_STALL_TIMEOUT_SECONDS: int = Field(10, ge=2, le=600)
    # How long the run ledger keeps the record of each occurrence (pruned in small batches).
    RUN_LEDGER_RETENTION_DAYS: int = Field(30, ge=1, le=3650)

    # --- surviving faults: Redis and PostgreSQL restarts, lost workers ------------------------
    # A periodic run sent this long ago and not started, whose queue is empty, was lost by the
    # broker (a dead worker held it, or Redis lost it): beat sends it again.
    RUN_LEDGER_RESEND_AFTER_SECONDS: float = Field(30.0, ge=5, le=86400)
    # A worker whose heartbeat (in PostgreSQL, every few seconds) is older than this is gone:
    # the periodic runs it had started run again elsewhere.
    WORKER_LOST_AFTER_SECONDS: float = Field(20.0, ge=10, le=3600)
    # An occurrence sent or started this many times without an outcome is failed, with an alert.
    RUN_LEDGER_MAX_ATTEMPTS: int = Field(5, ge=1, le=100)
    # How long a task waits for PostgreSQL to come back (its run guard, its service, its outcome)
    # before it gives up: the guard puts the message back, a service fails with its error.
    WORKER_DATABASE_WAIT_SECONDS: float = Field(60.0, ge=0, le=3600)
    # A worker with free processes that takes no message for this long while messages wait in
    # its queues has stopped consuming: it exits (code 70) so that the platform restarts it.
    CELERY_WORKER_STALL_TIMEOUT_SECONDS: float = Field(60.0, ge=10, le=3600)

    # --- the web's edge: what a request body may cost before the application reads it ------
    # Largest request body of any route that does not declare its own (the CSV upload does):
    # a larger Content-Length is a 413 before the body is read; a streamed body is cut there.
    HTTP_MAX_BODY_BYTES: int = Field(1024 * 1024, ge=1024)
    # Each piece of a request body must arrive within this long (else 408); also the grace
    # before the minimum rate below applies.
    HTTP_BODY_READ_TIMEOUT_SECONDS: float = Field(10.0, gt=0, le=600)
    # A body may take HTTP_BODY_READ_TIMEOUT_SECONDS plus one second per this many bytes
    # received: a slower one is cut with a 408.
    HTTP_BODY_MIN_BYTES_PER_SECOND: int = Field(16 * 1024, ge=1)

    # PostgreSQL ends a web session's statement after this long, and a web session left idle
    # inside a transaction after this long: whatever holds a connection by mistake, briefly.
    WEB_DATABASE_STATEMENT_TIMEOUT_SECONDS: float = Field(30.0, gt=0, le=3600)
    WEB_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS: float = Field(10.0, gt=0, le=3600)
    # Uploads one user, and one organization, may have under way at once (across web
    # processes, counted in Redis); one more is a 429 with Retry-After.
    UPLOAD_MAX_CONCURRENT_PER_USER: int = Field(2, ge=1, le=1000)
    UPLOAD_MAX_CONCURRENT_PER_ORGANIZATION: int = Field(4, ge=1, le=10000)

    # --- quotas: what one user or organization may queue and store (erp.core.quotas) ---------
    # Tasks one user, and one organization, may queue per minute (a burst of that many at once,
    # then one every 60/N s); one more is a 429 with Retry-After. Counted in Redis.
    TASKS_PER_MINUTE_PER_USER: int = Field(60, ge=1, le=1_000_000)
    TASKS_PER_MINUTE_PER_ORGANIZATION: int = Field(300, ge=1, le=1_000_000)
    # Reports and imports one organization may have queued or running at once (429 beyond).
    REPORT_MAX_RUNNING_PER_ORGANIZATION: int = Field(2, ge=1, le=10000)
    DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION: int = Field(2, ge=1, le=10000)
    # A running report's or import's slot lapses this long after its worker last renewed it
    # (every third of it): a worker that dies gives its slots back within this long.
    TASK_SLOT_LEASE_SECONDS: float = Field(60.0, ge=3, le=3600)
    # The bytes one organization's stored files (uploads and reports) may add up to; an upload
    # that would go beyond is a 413 naming the quota.
    STORAGE_QUOTA_BYTES_PER_ORGANIZATION: int = Field(1024 * 1024 * 1024, ge=1024)
    # The longest date range of one sales report, in days (both dates included): 422 beyond.
    REPORT_MAX_RANGE_DAYS: int = Field(366, ge=1, le=3660)

    # --- files, imports and health checks --------------------------------------------------
    # Uploaded and generated files (in PostgreSQL, see erp.core.files) are deleted this long
    # after they were stored; an hourly task prunes them.
    FILE_RETENTION_HOURS: int = Field(72, ge=1)
    # Largest CSV upload accepted; the limit is enforced while the body streams in (413).
    DATA_IMPORT_MAX_UPLOAD_BYTES: int = Field(100 * 1024 * 1024, ge=1024)
    # Rows an import commits per transaction, with its progress: what a redelivery repeats at most.
    # 5,000 rather than 2,000: each chunk costs several round trips and a commit, a tenth of the
    # import's CPU at 2,000 rows; its rows held until written stay a few MiB.
    DATA_IMPORT_CHUNK_ROWS: int = Field(5000, ge=1, le=100_000)
    # An import started this many times without finishing (its worker killed under it each time,
    # or its connections lost) is failed with the reason instead of being delivered again.
    DATA_IMPORT_MAX_ATTEMPTS: int = Field(10, ge=1, le=100)
    # How long a request's Idempotency-Key is kept with its response (erp/core/idempotency.py):
    # the same key from the same user within this answers with the first response.
    IDEMPOTENCY_KEY_TTL_SECONDS: int = Field(86400, ge=60, le=30 * 86400)
    # Cadence of the periodic health check (a periodic job of the product: beat runs it this often).
    HEALTH_CHECK_INTERVAL_SECONDS: float = Field(60.0, ge=5)
    # Health check results older than this are deleted by the health check itself.
    HEALTH_CHECK_RETENTION_HOURS: int = Field(168, ge=1)
    # Messages waiting in one queue above which the queue-depth check reports a problem.
    HEALTH_CHECK_MAX_QUEUE_DEPTH: int = Field(1000, ge=1)

    # --- accounts: API token lifetimes -------------------------------------------------------
    # A token asked for without an expiry lives this long; none lives longer than the maximum
    # (an explicit `expires_in_days` above it is a 422): a leaked token stops working on its own.
    API_TOKEN_DEFAULT_LIFETIME_DAYS: int = Field(90, ge=1, le=3650)
    API_TOKEN_MAX_LIFETIME_DAYS: int = Field(365, ge=1, le=3650)

    # --- the operator console: one-time login links (python -m erp create-token) --------------
    # Where people reach this deployment (`https://erp.example.com`): the base of the login links
    # the command line prints. Unset: http://127.0.0.1:8000, the web of scripts/dev.
    PUBLIC_BASE_URL: str | None = Field(None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # A login link signs in once, within this many minutes of being made.
    LOGIN_LINK_LIFETIME_MINUTES: int = Field(15, ge=1, le=1440)

    # --- alerts from the run ledger, posted to webhooks by a worker task -------------------------
    # Comma-separated http(s) URLs each alert is posted to as JSON (Slack-compatible `text`);
    # empty: alerts are only listed at /api/v1/admin/alerts.
    ALERT_WEBHOOK_URLS: str = ""
    ALERT_WEBHOOK_TIMEOUT_SECONDS: float = Field(5.0, gt=0, le=60)
    # An alert not delivered after this many attempts is given up (it stays listed, with its error).
    ALERT_WEBHOOK_MAX_ATTEMPTS: int = Field(8, ge=1, le=100)

    # --- deployment: the flower process (erp/flower.py) ---------------------------------------
    # `development` lets flower start without a password; anything deployed stays `production`.
    ERP_ENVIRONMENT: Literal["development", "production"] = "production"
    # `user:password[,user2:password2]`; flower refuses to start without it outside development.
    FLOWER_BASIC_AUTH: str | None = None

    # --- development and tests: eager mode (erp/core/eager.py) --------------------------------
    # Tasks run in the process that queues them, at once, without a worker. Refused unless
    # ERP_ENVIRONMENT is `development`: a deployed web would run every task inside its requests.
    CELERY_TASK_ALWAYS_EAGER: bool = False

    # --- operations: /metrics ------------------------------------------------------------------
    # `Authorization: Bearer <METRICS_TOKEN>` reads /metrics; without it /metrics answers only
    # in development.
    METRICS_TOKEN: str | None = Field(None, min_length=16)

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in _POSTGRES_SCHEMES:
            raise ValueError(
                f"scheme {scheme!r} is not PostgreSQL; expected one of postgres://, postgresql://,"
                " postgresql+psycopg2://, postgresql+asyncpg://"
            )
        if not urlsplit(value).hostname and "host=" not in value:
            raise ValueError("the URL names no host")
        return value

    @field_validator("REDIS_URL", "REDIS_TLS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in _REDIS_SCHEMES:
            raise ValueError(f"expected a redis:// or rediss:// URL, got {urlsplit(value).scheme!r}://")
        return value

    @field_validator("METRICS_TOKEN", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes `${METRICS_TOKEN:-}` as an empty string when the shell has none.
        return None if value == "" else value

    @field_validator("ALERT_WEBHOOK_URLS")
    @classmethod
    def _check_webhook_urls(cls, value: str) -> str:
        for url in _split_urls(value):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # The URL itself is not quoted: a webhook's path is often its secret.
                raise ValueError(
                    f"each URL must be http:// or https:// with a host; got one starting {parts.scheme!r}://"
                )
        return value

    @field_validator("FORWARDED_ALLOW_IPS")
    @classmethod
    def _check_forwarded_allow_ips(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item == "*":
                # uvicorn then takes the leftmost X-Forwarded-For entry, which the client writes.
                raise ValueError(
                    "'*' trusts every peer and makes the client's own X-Forwarded-For its address;"
                    " name the proxy in front (see README, Deploying)"
                )
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (like 10.0.0.0/8)") from None
        return value

    @field_validator("TIME_ZONE")
    @classmethod
    def _check_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _check_time_limits(self) -> Settings:
        if self.CELERY_TASK_SOFT_TIME_LIMIT_SECONDS >= self.CELERY_TASK_TIME_LIMIT_SECONDS:
            raise ValueError(
                "CELERY_TASK_SOFT_TIME_LIMIT_SECONDS must be below CELERY_TASK_TIME_LIMIT_SECONDS,"
                " so a task can clean up before it is killed"
            )
        return self

    @model_validator(mode="after")
    def _check_token_lifetimes(self) -> Settings:
        if self.API_TOKEN_DEFAULT_LIFETIME_DAYS > self.API_TOKEN_MAX_LIFETIME_DAYS:
            raise ValueError(
                "API_TOKEN_DEFAULT_LIFETIME_DAYS must be at most API_TOKEN_MAX_LIFETIME_DAYS,"
                " or a token asked for without an expiry could not be made"
            )
        return self

    @field_validator("CELERY_TASK_ALWAYS_EAGER")
    @classmethod
    def _eager_only_in_development(cls, value: bool, info: ValidationInfo) -> bool:
        # ERP_ENVIRONMENT is declared above, so it is validated first (absent if it was wrong).
        if value and info.data.get("ERP_ENVIRONMENT") != "development":
            raise ValueError(
                "runs every task inside the process that queues it (the web's requests), for development"
                " and tests only: it needs ERP_ENVIRONMENT=development"
            )
        return value

    # --- derived URLs -------------------------------------------------------------------------

    @cached_property
    def alert_webhook_urls(self) -> list[str]:
        return _split_urls(self.ALERT_WEBHOOK_URLS)

    def _database_url(self, scheme: str, ssl_parameter: str) -> str:
        # asyncpg calls libpq's `sslmode` `ssl`; Heroku-style URLs may carry either.
        query = dict(parse_qsl(urlsplit(self.DATABASE_URL).query))
        for name in ("ssl", "sslmode"):
            if name in query and name != ssl_parameter:
                query[ssl_parameter] = query.pop(name)
        return _replace_scheme(self.DATABASE_URL, scheme, query)

    @cached_property
    def async_database_url(self) -> str:
        """`postgresql+asyncpg://`, for the web process and the tasks' service layer."""
        return self._database_url("postgresql+asyncpg", "ssl")

    @cached_property
    def sync_database_url(self) -> str:
        """`postgresql+psycopg2://`, for Alembic and beat."""
        return self._database_url("postgresql+psycopg2", "sslmode")

    @cached_property
    def redis_url(self) -> str:
        """The Redis server, without a database number: TLS URL first, then REDIS_URL, then parts."""
        url = self.REDIS_TLS_URL or self.REDIS_URL
        if url is None:
            password = f":{self.REDIS_PASSWORD}@" if self.REDIS_PASSWORD else ""
            url = f"redis://{password}{self.REDIS_HOST}:{self.REDIS_PORT}"
        return url

    def _redis_db_url(self, db: int) -> str:
        parts = urlsplit(self.redis_url)
        query = dict(parse_qsl(parts.query))
        if parts.scheme == "rediss":
            # Celery refuses a rediss:// URL that does not say how to check the certificate.
            query.setdefault("ssl_cert_reqs", _CERT_REQS[self.REDIS_SSL_CERT_REQS])
        return urlunsplit((parts.scheme, parts.netloc, f"/{db}", urlencode(query), ""))

    @cached_property
    def broker_url(self) -> str:
        return self.CELERY_BROKER_URL or self._redis_db_url(self.REDIS_CELERY_BROKER_DB)

    @cached_property
    def result_backend_url(self) -> str:
        return self.CELERY_RESULT_BACKEND or self._redis_db_url(self.REDIS_CELERY_RESULT_DB)


def _split_urls(value: str) -> list[str]:
    return [url.strip() for url in value.split(",") if url.strip()]


def describe_validation_error(error: ValidationError) -> str:
    """One line per wrong setting: `VARIABLE: what is wrong`."""
    lines = []
    for item in error.errors():
        variable = ".".join(str(part) for part in item["loc"]) or "settings"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set (see .env.example)"
        lines.append(f"{variable}: {message}")
    return "; ".join(lines)


def load_settings() -> Settings:
    """Read the settings, or stop the process with one line naming what is wrong."""
    # ERP_ENV_FILE lets the tests and benchmarks ignore a developer's .env.
    env_file = os.environ.get("ERP_ENV_FILE", ".env")
    try:
        return Settings(_env_file=env_file)
    except ValidationError as error:
        raise SystemExit(f"erp: configuration error: {describe_validation_error(error)}") from None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read on first use."""
    return load_settings()
