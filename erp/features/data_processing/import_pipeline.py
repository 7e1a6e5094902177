"""Sales-order imports, the worker's part: the import of an uploaded CSV, chunk by chunk.

Parse and check the rows (erp.features.data_processing.parsing), then write them in ONE
transaction per chunk of about DATA_IMPORT_CHUNK_ROWS rows (erp.features.data_processing
.chunk_writes): the orders and their lines (with `COPY`; a chunk holding an order already
present is written instead with `ON CONFLICT (organization_id, order_number) DO NOTHING`, so
that order is skipped: importing the same file again adds nothing), the failed rows, and the
import's counters with `resume_after_line`.
An order and its lines are never split across transactions. If the worker dies, the
redelivered task re-reads the file, skips every record up to `resume_after_line` and goes on:
no duplicate, nothing lost.

A chunk is written by a task on the event loop while the next one is read and parsed
(`_ChunkWrites`): the server stores rows while Python parses, where before each waited for the
other. The file is read on a connection of its own (erp.core.bridge.side_connection), since the
session's connection is busy with the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import side_connection
from erp.core.config import get_settings
from erp.core.files import file_store
from erp.core.progress import Progress, no_progress
from erp.features.data_processing.chunk_writes import Chunk, Superseded, Written, write_chunk
from erp.features.data_processing.exceptions import ImportFailed, ImportNotFound
from erp.features.data_processing.models import DataImportDB
from erp.features.data_processing.orders import OrderAssembler
from erp.features.data_processing.parsing import (
    CsvRecords,
    EncodingProblem,
    HeaderProblem,
    Record,
    Utf8Decoder,
    header_columns,
)

logger = logging.getLogger(__name__)


def summary(data_import: DataImportDB) -> dict[str, Any]:
    return {
        "import_id": data_import.id,
        "status": data_import.status,
        "rows_read": data_import.rows_read,
        "rows_imported": data_import.rows_imported,
        "rows_skipped": data_import.rows_skipped,
        "rows_failed": data_import.rows_failed,
        "orders_imported": data_import.orders_imported,
        "attempts": data_import.attempts,
    }


async def _discard_upload(data_import: DataImportDB, *, session: AsyncSession) -> None:
    """Delete the uploaded file of an import that is over, in the transaction that says so.

    Nothing reads it afterwards: a redelivery of a finished import returns at once, and its
    failed rows (errors.csv) are rows of data_import_errors, not the file. Kept, it would count
    against the organization's storage quota until FILE_RETENTION_HOURS.
    """
    if data_import.file_id is not None:
        await file_store(session).delete(data_import.file_id)
        data_import.file_id = None


async def _fail(data_import: DataImportDB, message: str, *, session: AsyncSession) -> ImportFailed:
    data_import.status = "failed"
    data_import.error = message
    data_import.finished_at = datetime.now(UTC)
    await _discard_upload(data_import, session=session)
    await session.commit()
    return ImportFailed(f"data import {data_import.id}: {message}")


async def record_failure(import_id: int, message: str, *, session: AsyncSession) -> None:
    """Mark an import failed after its task gave up (an error it does not retry, or retries
    spent), and delete its upload (see _discard_upload)."""
    unfinished = DataImportDB.id == import_id, DataImportDB.status.in_(("queued", "running"))
    found = (await session.execute(select(DataImportDB.file_id).where(*unfinished).with_for_update())).one_or_none()
    if found is None:
        return  # finished already
    await session.execute(
        update(DataImportDB).where(*unfinished).values(status="failed", error=message, finished_at=func.now())
    )
    if found.file_id is not None:
        await file_store(session).delete(found.file_id)


async def import_sales_orders(
    import_id: int, *, session: AsyncSession, progress: Progress = no_progress
) -> dict[str, Any]:
    """Import the uploaded CSV of `import_id`, resuming after its last committed chunk."""
    with fewer_collections():
        return await _import_sales_orders(import_id, session=session, progress=progress)


# The cyclic garbage collector's first threshold while an import runs (Python's default: 700).
# Measured at 1,000,000 rows: 700 and 15,000 keep the worker's peak memory where it is at
# 10,000 rows; 50,000 let it grow by 65 MiB (cyclic garbage promoted and kept until a full
# collection) for a tenth less CPU.
IMPORT_GC_THRESHOLD = 15_000
_collections_lock = threading.Lock()
_imports_running = 0
_threshold_before: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """While imports run, the garbage collector leaves alone the objects that were there before
    (`gc.freeze`) and runs less often; its threshold as before once none runs.

    Why: an import makes several objects per row and keeps a chunk's (thousands of rows) alive
    until it is written, so the collector ran every 700 allocations, walked the chunk again and
    again and, as survivors piled up, the worker's whole heap (its modules, SQLAlchemy's and
    Celery's objects): a quarter of the import's Python time, more the larger the file. Frozen,
    that heap is not walked; the import's own garbage is still collected.

    Nothing is unfrozen afterwards: `gc.unfreeze()` would also hand back to the collector what
    the worker froze before forking this child (erp.core.worker_hooks.freeze_before_fork), and
    what was alive when the import began is the worker's own long-lived state. Its garbage is
    collected first, so none is kept frozen.
    """
    global _imports_running, _threshold_before
    with _collections_lock:
        if _imports_running == 0:
            _threshold_before = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(max(IMPORT_GC_THRESHOLD, _threshold_before[0]), *_threshold_before[1:])
        _imports_running += 1
    try:
        yield
    finally:
        with _collections_lock:
            _imports_running -= 1
            if _imports_running == 0:
                gc.set_threshold(*_threshold_before)


async def _import_sales_orders(import_id: int, *, session: AsyncSession, progress: Progress) -> dict[str, Any]:
    data_import = await session.get(DataImportDB, import_id, with_for_update=True)
    if data_import is None:
        raise ImportNotFound(f"data import {import_id} does not exist")
    if data_import.status in ("done", "failed"):
        return summary(data_import)  # a redelivery after it finished: nothing to do
    max_attempts = get_settings().DATA_IMPORT_MAX_ATTEMPTS
    if data_import.attempts >= max_attempts:
        # Late acks deliver the task again each time its worker dies: an import that kills its
        # worker (memory) would otherwise be run for ever, and hold a worker process each time.
        raise await _fail(
            data_import,
            f"started {data_import.attempts} times without finishing (its worker stopped under it or lost its "
            f"connections each time; DATA_IMPORT_MAX_ATTEMPTS is {max_attempts}): not run again",
            session=session,
        )
    data_import.status = "running"
    data_import.attempts += 1
    data_import.started_at = data_import.started_at or datetime.now(UTC)
    await session.commit()
    if data_import.file_id is None:
        raise await _fail(
            data_import, "its uploaded file has expired (FILE_RETENTION_HOURS): upload it again", session=session
        )
    resume_after_line = data_import.resume_after_line
    if resume_after_line:
        logger.info(
            "data import %s resumes after line %s",
            import_id,
            resume_after_line,
            extra={"action": "data_import.resumed", "import_id": import_id},
        )
    chunk_rows = get_settings().DATA_IMPORT_CHUNK_ROWS
    decoder = Utf8Decoder()
    records = CsvRecords()
    assembler: OrderAssembler | None = None
    chunk = Chunk(batches=[])
    writes = _ChunkWrites()
    bytes_read = 0

    def report(written: Written) -> None:
        progress(
            {
                "stage": "importing",
                "bytes_read": bytes_read,
                "bytes_total": data_import.size_bytes,
                "percent": round(100 * bytes_read / data_import.size_bytes, 1) if data_import.size_bytes else 100.0,
                "rows_read": written.rows_read,
                "rows_imported": written.rows_imported,
                "rows_skipped": written.rows_skipped,
                "rows_failed": written.rows_failed,
            }
        )

    async def write(chunk: Chunk) -> None:
        nonlocal resume_after_line
        # Runs after the previous chunk's write finished: resume_after_line is that chunk's.
        written = await write_chunk(data_import, chunk, resume_after_line, session=session)
        resume_after_line = written.resume_after_line
        report(written)

    async def flush() -> None:
        nonlocal chunk
        if chunk.batches:
            await writes.start(write(chunk))
            chunk = Chunk(batches=[])

    async def take(found: list[Record]) -> None:
        nonlocal assembler
        for count, record in enumerate(found):
            if count % YIELD_EVERY_RECORDS == 0 and writes.busy:
                await asyncio.sleep(0)  # the write in flight sends its next statement
            if assembler is None:
                if record.fields is None:
                    raise HeaderProblem(f"the header line is not readable as CSV ({record.problem})")
                assembler = OrderAssembler(header_columns(record.fields))
                continue
            if record.first_line <= resume_after_line:
                continue  # committed by an earlier run
            batch = assembler.add(record)
            if batch is not None:
                chunk.add(batch)
                if chunk.rows >= chunk_rows:
                    await flush()

    try:
        problem: EncodingProblem | HeaderProblem | None = None
        try:
            async with side_connection() as reader:
                async for piece in file_store(reader).read(data_import.file_id):
                    bytes_read += len(piece)
                    text = decoder.decode(piece)
                    for start in range(0, len(text), FEED_CHARACTERS):
                        await take(records.feed(text[start : start + FEED_CHARACTERS]))
            await take(records.feed(decoder.decode(b"", final=True)) + records.finish())
            if assembler is not None:
                batch = assembler.finish()
                if batch.rows:
                    chunk.add(batch)
            await flush()
        except (EncodingProblem, HeaderProblem) as error:
            problem = error  # the chunks before it are kept (the one in flight too)
        await writes.wait()
        if problem is not None:
            await session.rollback()
            raise await _fail(data_import, str(problem), session=session) from None
    except Superseded:
        await session.rollback()
        logger.warning(
            "data import %s: another run of it went further; this run stops",
            import_id,
            extra={"action": "data_import.superseded", "import_id": import_id},
        )
        await session.refresh(data_import)
        return summary(data_import)
    finally:
        await writes.abandon()  # only an error or a cancellation leaves one in flight
    data_import.status = "done"
    data_import.finished_at = datetime.now(UTC)
    await _discard_upload(data_import, session=session)
    await session.commit()
    await session.refresh(data_import)  # the counters the chunks wrote
    logger.info(
        "data import %s done: %s rows imported, %s skipped, %s failed",
        import_id,
        data_import.rows_imported,
        data_import.rows_skipped,
        data_import.rows_failed,
        extra={"action": "data_import.done", "import_id": import_id},
    )
    return summary(data_import)


# The file store's pieces (256 KiB) are parsed this much at a time: the CSV reader takes a
# piece in one call, and a whole piece held the event loop for tens of milliseconds, during
# which the write in flight could not send its next statement or its commit.
FEED_CHARACTERS = 16 * 1024
# While a chunk is being written, the parser lets the event loop run after this many records,
# so each statement of the write goes out soon after the one before it answered (about a
# tenth of a millisecond of parsing), at the cost of a few thousand loop turns per 100,000 rows.
YIELD_EVERY_RECORDS = 16


class _ChunkWrites:
    """One chunk being written, as a task on the event loop, while the import parses the next.

    Why: parsing and checking rows is Python's work and storing them is PostgreSQL's; done in
    turn, each waits for the other (the server is idle while Python parses). A chunk's write
    is several statements on the session's connection; asyncpg runs one at a time, and the
    next chunk's write starts only when this one has committed, so chunks still commit in
    file order, each with its counters and resume line.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, write: Coroutine[Any, Any, None]) -> None:
        """Wait for the write in flight (its error is raised here), then start `write`."""
        try:
            await self.wait()
        except BaseException:
            write.close()  # never started
            raise
        self._task = asyncio.create_task(write)
        await asyncio.sleep(0)  # let it send its first statement before parsing goes on

    async def wait(self) -> None:
        """The outcome of the write in flight: returns once it committed, or raises its error."""
        if self._task is not None:
            await self._task
            self._task = None

    async def abandon(self) -> None:
        """Cancel a write still in flight and wait until it stopped: another error is on its
        way out (or the task is being cancelled), and the session is rolled back after it."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the error already on its way out is the one reported
