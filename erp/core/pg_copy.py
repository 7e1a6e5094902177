"""PostgreSQL's COPY through the session's own asyncpg connection: bulk rows without Python per row.

A statement built with SQLAlchemy runs as `COPY (statement) TO STDOUT`, in the caller's session
(its connection, and its transaction if one is open), and its output comes back as an async
iterator of pieces as the server sends them; the pieces are never gathered, so memory stays flat
however many rows the statement gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

# Pieces waiting for the reader before COPY pauses (a few MB at most: asyncpg hands over what
# one read from the socket holds).
PIECES_IN_FLIGHT = 16


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session (checked out for it if it had none yet)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


def positional(session: AsyncSession, statement: ClauseElement) -> tuple[str, list[Any]]:
    """The statement's SQL for asyncpg (`$1`, `$2`, ...) and its parameters in that order."""
    compiled = cast(
        SQLCompiler,
        statement.compile(dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True}),
    )
    return str(compiled), [compiled.params[name] for name in compiled.positiontup or ()]


async def copy_out(session: AsyncSession, statement: ClauseElement, **copy_options: Any) -> AsyncIterator[bytes]:
    """The rows of `statement` as `COPY ... TO STDOUT` writes them (`copy_options`: format="csv", ...)."""
    query, parameters = positional(session, statement)
    connection = await driver_connection(session)
    pieces: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=PIECES_IN_FLIGHT)

    async def copy() -> None:
        try:
            await connection.copy_from_query(query, *parameters, output=pieces.put, **copy_options)
        finally:
            await pieces.put(None)

    copying = asyncio.ensure_future(copy())
    try:
        while (piece := await pieces.get()) is not None:
            yield piece
    finally:
        # A reader that stopped early: the rest is read and dropped (at most the rest of one
        # statement's output). Cancelling the statement instead leaves the connection busy with
        # the cancellation for a moment, and the session's next statement (its rollback) fails
        # on it, which discards the connection.
        while not copying.done() and await pieces.get() is not None:
            pass
        await copying  # its error, if it failed
