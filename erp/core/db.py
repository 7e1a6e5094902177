"""Engines and session factories: how each process reaches PostgreSQL, and why its pool is the
size it is. Everything is made on first use, never at import, so importing a module costs no
settings, engine or connection.

- Web (each uvicorn process): `web_engine()`, asyncpg, a pool of 10 and 10 more under load. A
  request holds one connection: its session (`get_session`), or for downloads a bare
  connection outside any transaction (`autocommit_engine`, the same pool), one per chunk.
  Authentication has a pool of its own (`auth_engine()`, 2 and 2 more, autocommit): a feature
  that uses up the main pool cannot make every other request wait for, or fail, its bearer
  check. Both pools' sessions end a statement after `WEB_DATABASE_STATEMENT_TIMEOUT_SECONDS`
  and a transaction left idle after `WEB_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS`
  (server settings, `web_server_settings`): whatever holds a connection by mistake holds it
  for seconds, not for as long as a client cares to wait. No request waits on its client with
  a connection checked out (erp.core.files spools uploads first and reads downloads a chunk
  per connection).
- Worker (each prefork child), two ways and no other, each made in the child after the fork
  and keyed by its pid (an engine made before the fork must not be used by the children: they
  would share its sockets with the parent):
  - async work, the services a task calls: erp.core.bridge, one event loop per process owning
    an asyncpg pool of 1 and 1 more. A child runs one task at a time; the spare covers a
    cancelled task whose connection is still being returned while the next task starts. A
    service that reads while its session writes (the sales-order import reads its file while
    a chunk is written) opens one side connection beside the pool (`bridge.side_connection`,
    which says why it is not pooled).
  - synchronous work around and outside the service layer, the run guard and outcome writes
    (Celery's signals, before and after a periodic run's body) and alert delivery (a task that
    posts to webhooks): `worker_sync_engine()`, psycopg2, a pool of 1 and 1 more. They take
    turns: the guard's statement ends before the body starts, and the outcome is written after
    the body's transaction ended; the spare is for a signal handler that runs while a
    delivery still holds the first, never a wait.
- Beat: `create_sync_engine` with `stall_limits`, psycopg2, a pool of 2 and no more: the tick's
  short transactions, and the change listener's LISTEN connection.
- Alembic and the command line: one-off connections (`create_sync_engine`, `run_with_session`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from erp.core.config import get_settings

# The PostgreSQL channel that wakes beat when what it schedules changed: the periodic-task
# tables' triggers (alembic revision 0001) NOTIFY it on every change, and so do a backfill and
# a finished run whose successor was held.
SCHEDULE_CHANGES_CHANNEL = "erp_periodic_tasks"

# Stable constraint names, so Alembic autogenerate produces migrations that downgrade cleanly.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Fetch server-made values (ids, created_at, updated_at) with RETURNING when a row is
    # written: async sessions cannot lazy-load them afterwards.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's own declaration


# A pooled connection idle longer than this is pinged before use (see ping_idle_connections).
IDLE_PING_AFTER_SECONDS = 2.0


def _note_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info["checked_in_at"] = time.monotonic()


def _is_closed(dbapi_connection: Any) -> bool:
    """Whether the driver already knows the server closed this connection (no round trip).

    asyncpg learns it as soon as its event loop reads the server's goodbye (a restart ends
    every session), so a connection a restart killed is known dead here however briefly it
    sat in the pool.
    """
    driver_connection = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver_connection, "is_closed", None)
    if callable(is_closed):
        return bool(is_closed())
    return bool(getattr(dbapi_connection, "closed", False))


def _ping_if_idle(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    if _is_closed(dbapi_connection):
        raise DisconnectionError("the server closed this pooled connection")
    idle_for = time.monotonic() - connection_record.info.get("checked_in_at", time.monotonic())
    if idle_for > IDLE_PING_AFTER_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out a fresh one.
            raise DisconnectionError(f"idle connection is dead: {error}") from error


def ping_idle_connections(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, but only for connections that sat idle, or that the driver knows closed.

    Pinging on every checkout costs a round trip per task or request (a third of a one-query
    task). A connection returned moments ago is alive unless the server closed it (a restart
    ends every session, and asyncpg notices at once: checked without a round trip); one that
    sat idle may have been cut silently, and is pinged. Either is replaced here instead of
    failing the next caller.
    """
    event.listen(engine.sync_engine, "checkin", _note_checkin)
    event.listen(engine.sync_engine, "checkout", _ping_if_idle)


# Every engine hides its statements' parameters from the errors it raises: an error's text is
# logged, stored and shown (a failed import's, a task's status), and the parameters of an
# import's chunk are its customers' and products' names. See erp.core.errors.error_text.
HIDE_PARAMETERS = True


def create_async_db_engine(
    application_name: str, *, server_settings: dict[str, str] | None = None, **pool_options: Any
) -> AsyncEngine:
    return create_async_engine(
        get_settings().async_database_url,
        connect_args={"server_settings": {"application_name": application_name, **(server_settings or {})}},
        hide_parameters=HIDE_PARAMETERS,
        **pool_options,
    )


def web_server_settings() -> dict[str, str]:
    """PostgreSQL settings of every web session (milliseconds): see the module docstring."""
    settings = get_settings()
    return {
        "statement_timeout": str(int(settings.WEB_DATABASE_STATEMENT_TIMEOUT_SECONDS * 1000)),
        "idle_in_transaction_session_timeout": str(
            int(settings.WEB_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000)
        ),
    }


def create_sync_engine(
    application_name: str, *, connect_args: dict[str, Any] | None = None, **pool_options: Any
) -> Engine:
    return create_engine(
        get_settings().sync_database_url,
        connect_args={"application_name": application_name, **(connect_args or {})},
        hide_parameters=HIDE_PARAMETERS,
        **pool_options,
    )


@functools.cache
def web_engine() -> AsyncEngine:
    """The web process's pooled engine, made on first use (it connects lazily too).

    A forked worker child replaces its pool (see erp.core.celery_app) instead of sharing the
    parent's sockets.
    """
    engine = create_async_db_engine("erp-web", server_settings=web_server_settings(), pool_size=10, max_overflow=10)
    ping_idle_connections(engine)
    return engine


@functools.cache
def auth_engine() -> AsyncEngine:
    """The web's pool for authentication only (one short autocommit query per request).

    Separate from `web_engine` so that no feature, however many connections it takes, can
    starve the bearer check of every other request; small, because each use is one query.
    """
    engine = create_async_db_engine(
        "erp-web-auth",
        server_settings=web_server_settings(),
        pool_size=2,
        max_overflow=2,
        isolation_level="AUTOCOMMIT",
    )
    ping_idle_connections(engine)
    return engine


@functools.cache
def _worker_sync_engine(pid: int) -> Engine:
    return create_sync_engine("erp-worker-sync", pool_size=1, max_overflow=1, pool_pre_ping=True)


def worker_sync_engine() -> Engine:
    """This worker process's synchronous engine (see the module docstring), made after the fork."""
    return _worker_sync_engine(os.getpid())


@functools.cache
def web_session_factory() -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(web_engine(), expire_on_commit=False)


@functools.cache
def autocommit_engine() -> AsyncEngine:
    """For reads outside a transaction (downloads): a bare connection costs no BEGIN and
    ROLLBACK round trips and no ORM session."""
    return web_engine().execution_options(isolation_level="AUTOCOMMIT")


async def dispose_web_engine() -> None:
    """Close the web engines' connections (the web process's shutdown)."""
    if web_engine.cache_info().currsize:
        await web_engine().dispose()
    if auth_engine.cache_info().currsize:
        await auth_engine().dispose()


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, rolled back unless the service committed."""
    async with web_session_factory()() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


T = TypeVar("T")


def run_with_session(action: Callable[[AsyncSession], Awaitable[T]], application_name: str = "erp-cli") -> T:
    """For command-line tools: `action(session)` on a throwaway engine, in a new event loop."""

    async def run() -> T:
        engine = create_async_db_engine(application_name, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                return await action(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def stall_limits(stall_timeout_seconds: int) -> dict[str, Any]:
    """psycopg2 connection options that keep a frozen or vanished process (beat) from holding
    row locks for long.

    PostgreSQL ends a session idle inside a transaction for longer than the stall timeout (a
    frozen process), and the keepalives make both sides notice a host that is gone within about
    twenty seconds (the defaults would take over two hours). Statements of such a process are
    short: one running longer than a minute is stuck, not busy.
    """
    server_settings = {
        "idle_in_transaction_session_timeout": stall_timeout_seconds * 1000,
        "statement_timeout": 60_000,
        "tcp_keepalives_idle": 10,
        "tcp_keepalives_interval": 5,
        "tcp_keepalives_count": 3,
    }
    return {
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "options": " ".join(f"-c {name}={value}" for name, value in server_settings.items()),
    }
