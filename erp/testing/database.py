"""A session whose work is rolled back, however often the code under test commits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import NullPool

from erp.core.db import create_async_db_engine


@contextlib.asynccontextmanager
async def rolled_back_session() -> AsyncIterator[AsyncSession]:
    """An `AsyncSession` on one connection of the settings' database, inside a transaction that
    is rolled back at the end.

    `session.commit()` in a service ends a savepoint, not the transaction
    (`join_transaction_mode="create_savepoint"`), so a service runs as it does in a task and
    nothing stays behind. Its own engine without a pool, opened on the test's event loop: an
    engine is bound to the loop that opened its connections.
    """
    engine = create_async_db_engine("erp-test-session", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            session = AsyncSession(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
            try:
                yield session
            finally:
                await session.close()
                await transaction.rollback()
    finally:
        await engine.dispose()
