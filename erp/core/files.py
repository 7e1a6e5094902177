"""Files every process can reach: uploads and generated reports, stored in PostgreSQL.

Why not the local disk: on Heroku dynos and Dokku containers the web process that takes an
upload and the worker that reads it run on different machines, and a dyno's disk is emptied
on restart. PostgreSQL is already reachable from every process, so files live there, split
into chunks of `CHUNK_BYTES` (`file_chunks`, bytea), written and read one chunk at a time:
neither an upload nor a download is ever whole in memory.

Callers use the `FileStore` interface (`file_store(session)`), so an object store (S3 and
the like) can be added behind it later without touching the features. A file is written in
the caller's transaction: until it commits nobody sees it, and a failed upload leaves nothing.
Files expire `FILE_RETENTION_HOURS` after they were stored; `prune_expired` deletes them.

Nothing here waits on a client while it holds a connection: `save` takes the bytes into a spool
(memory up to `SPOOL_IN_MEMORY_BYTES`, then a temporary file) before its first statement, so an
upload that stalls or trickles holds no pooled connection and no open transaction (the
session's first statement checks one out); and `read_detached` reads each chunk on a connection
of its own, back in the pool before the chunk goes to a client that reads at its own pace.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from erp.core.config import get_settings
from erp.core.db import Base
from erp.core.errors import NotFoundError

# Large enough that a 100 MB file is 400 rows, small enough that a chunk in memory is nothing.
CHUNK_BYTES = 256 * 1024
# Expired files deleted per statement, so pruning never holds one huge transaction.
PRUNE_BATCH = 100
# What `save` keeps in memory before its spool moves to a temporary file.
SPOOL_IN_MEMORY_BYTES = 1024 * 1024


class FileDB(Base):
    """One stored file; its bytes are the `file_chunks` rows with its id, in `seq` order."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # No foreign key to organizations: erp.core knows no accounts. A file without an
    # organization (None) is nobody's to download.
    organization_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    purpose: Mapped[str] = mapped_column(String(32))  # "upload", "report", ...
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class FileChunkDB(Base):
    __tablename__ = "file_chunks"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class StoredFile:
    id: int
    organization_id: int | None
    purpose: str
    name: str
    content_type: str
    size_bytes: int
    sha256: str | None
    created_at: datetime
    expires_at: datetime


# Plain columns, not entities: the same query runs on a session and on a bare connection.
_FILE_COLUMNS = select(
    FileDB.id,
    FileDB.organization_id,
    FileDB.purpose,
    FileDB.name,
    FileDB.content_type,
    FileDB.size_bytes,
    FileDB.sha256,
    FileDB.created_at,
    FileDB.expires_at,
)


class FileStore(Protocol):
    """Where uploads and generated files live. Every method streams; none holds a file whole."""

    async def save(
        self,
        chunks: AsyncIterable[bytes],
        *,
        name: str,
        content_type: str,
        purpose: str,
        organization_id: int | None,
    ) -> StoredFile:
        """Store the bytes `chunks` yields; an exception from `chunks` stores nothing."""
        ...

    async def get(self, file_id: int) -> StoredFile:
        """The file's description, or NotFoundError (never stored, deleted or expired)."""
        ...

    def read(self, file_id: int) -> AsyncIterator[bytes]:
        """The file's bytes, one chunk at a time."""
        ...

    async def read_chunk(self, file_id: int, seq: int) -> bytes | None:
        """Chunk `seq` (from 0) of the file, or None past its end."""
        ...

    async def delete(self, file_id: int) -> None: ...

    async def stored_bytes(self, organization_id: int) -> int:
        """The size of the organization's files not yet expired, added up (its storage quota)."""
        ...

    async def prune_expired(self) -> int:
        """Delete the files past their retention; how many were deleted."""
        ...


class PostgresFileStore:
    """`FileStore` in the `files` and `file_chunks` tables, on the caller's session or connection.

    On a session, a saved file belongs to the caller's transaction (committed or rolled back
    with the rest of its work). A download reads on an autocommit connection, one short query
    per chunk, so a slow client holds no transaction open.
    """

    def __init__(self, executor: AsyncSession | AsyncConnection) -> None:
        self._db = executor

    async def save(
        self,
        chunks: AsyncIterable[bytes],
        *,
        name: str,
        content_type: str,
        purpose: str,
        organization_id: int | None,
    ) -> StoredFile:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
            # Every byte is in before the first statement (see the module docstring). Writes go
            # to memory or the page cache, microseconds per piece: not worth a thread each.
            digest = hashlib.sha256()
            size = 0
            async for piece in chunks:
                spool.write(piece)
                digest.update(piece)
                size += len(piece)
            spool.seek(0)
            expires_at = select(func.now() + timedelta(hours=get_settings().FILE_RETENTION_HOURS)).scalar_subquery()
            file_id: int = (
                await self._db.execute(
                    insert(FileDB)
                    .values(
                        organization_id=organization_id,
                        purpose=purpose,
                        name=name[:255],
                        content_type=content_type[:100],
                        size_bytes=size,
                        sha256=digest.hexdigest(),
                        expires_at=expires_at,
                    )
                    .returning(FileDB.id)
                )
            ).scalar_one()
            seq = 0
            while piece := spool.read(CHUNK_BYTES):
                await self._db.execute(insert(FileChunkDB).values(file_id=file_id, seq=seq, data=piece))
                seq += 1
        return await self.get(file_id)

    async def get(self, file_id: int) -> StoredFile:
        row = (
            await self._db.execute(_FILE_COLUMNS.where(FileDB.id == file_id, FileDB.expires_at > func.now()))
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"file {file_id} does not exist or has expired")
        return StoredFile(**row._asdict())

    async def read(self, file_id: int) -> AsyncIterator[bytes]:
        seq = 0
        while (data := await self.read_chunk(file_id, seq)) is not None:
            yield data
            seq += 1

    async def read_chunk(self, file_id: int, seq: int) -> bytes | None:
        data: bytes | None = (
            await self._db.execute(
                select(FileChunkDB.data).where(FileChunkDB.file_id == file_id, FileChunkDB.seq == seq)
            )
        ).scalar_one_or_none()
        return data

    async def delete(self, file_id: int) -> None:
        await self._db.execute(delete(FileDB).where(FileDB.id == file_id))

    async def stored_bytes(self, organization_id: int) -> int:
        total = (
            await self._db.execute(
                select(func.coalesce(func.sum(FileDB.size_bytes), 0)).where(
                    FileDB.organization_id == organization_id, FileDB.expires_at > func.now()
                )
            )
        ).scalar_one()
        return int(total)

    async def prune_expired(self) -> int:
        deleted = 0
        while True:
            batch = select(FileDB.id).where(FileDB.expires_at <= func.now()).limit(PRUNE_BATCH).scalar_subquery()
            ids = (await self._db.execute(delete(FileDB).where(FileDB.id.in_(batch)).returning(FileDB.id))).all()
            deleted += len(ids)
            if len(ids) < PRUNE_BATCH:
                return deleted


def file_store(executor: AsyncSession | AsyncConnection) -> FileStore:
    """The product's file store. PostgreSQL today; the one place to choose another."""
    return PostgresFileStore(executor)


async def read_detached(
    file_id: int, connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]]
) -> AsyncIterator[bytes]:
    """The file's bytes for a client that reads at its own pace (a download).

    Each chunk is read on a connection of its own (`connect()`, e.g. the web's autocommit
    engine's `connect`), returned to the pool before the chunk is handed on: a client that stops
    reading holds a chunk in memory and no connection. A file deleted meanwhile ends early.
    """
    seq = 0
    while True:
        async with connect() as connection:
            data = await file_store(connection).read_chunk(file_id, seq)
        if data is None:
            return
        yield data
        seq += 1
