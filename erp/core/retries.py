"""Which failures a task retries, and how: connection failures and transactions PostgreSQL rolled
back for a concurrent one (deadlock, serialization), with backoff and jitter.

A task that lost its database or broker connection, or whose transaction lost a deadlock,
will probably succeed a few seconds later; a task given bad parameters never will. So tasks retry one exception type,
`TransientError`, which `retry_transient_errors()` raises in place of a connection failure,
and everything else fails at once with its own message:

    @celery_app.task(bind=True, name="...", **RETRY_ON_TRANSIENT_ERRORS)
    def my_task(self, ...):
        with retry_transient_errors():
            return run_service(...)

Why not `autoretry_for=(sqlalchemy.exc.DBAPIError, ...)` directly: SQLAlchemy's asyncpg
dialect reports a connection cut by the server (a restart, `pg_terminate_backend`) as a plain
`DBAPIError`, the same class as a constraint violation; only the wrapped asyncpg error (or
SQLAlchemy's `connection_invalidated`) says which it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from kombu.exceptions import OperationalError as KombuOperationalError

from erp.core.errors import error_text


class TransientError(Exception):
    """A database or broker connection failed; the same call may succeed a moment later."""


# Celery's retry options for `@celery_app.task(**RETRY_ON_TRANSIENT_ERRORS)`: waits of about
# 2, 4, 8, 16, 32 s (each drawn at random below that, so retries of many tasks spread out),
# then the task fails with the last error.
RETRY_ON_TRANSIENT_ERRORS: dict[str, Any] = {
    "autoretry_for": (TransientError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free in time
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting or shutting down
    asyncpg.exceptions.AdminShutdownError,  # pg_terminate_backend, a restart
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    KombuOperationalError,
    ConnectionError,
    TimeoutError,
)


# SQLSTATE class 40, transaction rollback: a deadlock (40P01) or a serialization failure
# (40001). PostgreSQL rolled the transaction back only because another one ran at the same
# time: the same transaction run again normally succeeds (PostgreSQL's manual says to retry).
_ROLLED_BACK_FOR_CONCURRENCY = "40"


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE a driver's error carries: asyncpg's `sqlstate`, psycopg2's `pgcode`."""
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def is_transient(error: BaseException) -> bool:
    """Does `error`, or anything it wraps, say a connection failed, or that PostgreSQL rolled
    its transaction back for a concurrent one (a deadlock, a serialization failure)?"""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        code = _sqlstate(current)
        if code is not None and code.startswith(_ROLLED_BACK_FOR_CONCURRENCY):
            return True
        orig = getattr(current, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, current.__cause__, current.__context__])
    return False


@contextlib.contextmanager
def retry_transient_errors() -> Iterator[None]:
    """Raise `TransientError` (which the task retries) in place of a connection failure."""
    try:
        yield
    except TransientError:
        raise
    except Exception as error:
        if is_transient(error):
            raise TransientError(error_text(error)) from error
        raise
