"""Engines and session factories.

- The web process uses `async_engine` / `AsyncSessionFactory`: one session per request
  (`get_session`).
- Celery tasks reach the database only through `erp.core.bridge`, which owns a per-process
  engine bound to its own event loop.
- Beat and Alembic use a synchronous psycopg2 engine (`create_sync_engine`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from erp.core.config import settings

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
    __mapper_args__ = {"eager_defaults": True}


# A pooled connection idle longer than this is pinged before use (see ping_idle_connections).
IDLE_PING_AFTER_SECONDS = 2.0


def _note_checkin(dbapi_connection, connection_record) -> None:
    connection_record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection, connection_record, connection_proxy) -> None:
    idle_for = time.monotonic() - connection_record.info.get("checked_in_at", time.monotonic())
    if idle_for > IDLE_PING_AFTER_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out a fresh one.
            raise DisconnectionError(f"idle connection is dead: {error}") from error


def ping_idle_connections(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, but only for connections that sat idle.

    Pinging on every checkout costs a round trip per task or request (a third of a one-query
    task). A connection returned moments ago is alive; one that sat idle may have been cut by
    a PostgreSQL restart, and is replaced here instead of failing the next caller.
    """
    event.listen(engine.sync_engine, "checkin", _note_checkin)
    event.listen(engine.sync_engine, "checkout", _ping_if_idle)


def create_async_db_engine(application_name: str, **pool_options) -> AsyncEngine:
    return create_async_engine(
        settings.async_database_url,
        connect_args={"server_settings": {"application_name": application_name}},
        **pool_options,
    )


def create_sync_engine(application_name: str, **pool_options) -> Engine:
    return create_engine(
        settings.sync_database_url,
        connect_args={"application_name": application_name},
        **pool_options,
    )


# Created at import but connects lazily; a forked worker child replaces its pool
# (see erp.core.celery_app) instead of sharing the parent's sockets.
async_engine = create_async_db_engine("erp-web", pool_size=10, max_overflow=10)
ping_idle_connections(async_engine)
AsyncSessionFactory = async_sessionmaker(async_engine, expire_on_commit=False)
# For the query every request makes (authentication): a bare connection outside a
# transaction costs no BEGIN and ROLLBACK round trips and no ORM session.
autocommit_engine = async_engine.execution_options(isolation_level="AUTOCOMMIT")


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, rolled back unless the service committed."""
    async with AsyncSessionFactory() as session:
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
