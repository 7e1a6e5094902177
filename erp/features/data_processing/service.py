"""Sales-order imports: the upload (web) and the import itself (worker), as plain async functions.

(Longer than 400 lines on purpose: the upload and the import share the rules of what a row and
an order are, the chunk's transaction and the resume position, and are read together; the row
parsing itself is erp.features.data_processing.parsing.)

Upload: the body streams through `checked_upload` (size limit, UTF-8, header) into the file
store; a problem answers at once and leaves nothing behind (one transaction).

Import, chunk by chunk: parse and check the rows (erp.features.data_processing.parsing), then
in ONE transaction per chunk of about DATA_IMPORT_CHUNK_ROWS rows: insert the orders
(`ON CONFLICT (organization_id, order_number) DO NOTHING`, so an order already present is
skipped: importing the same file again adds nothing), the lines of the orders just inserted,
the failed rows, and the import's counters with `resume_after_line`. An order and its lines
are never split across transactions. If the worker dies, the redelivered task re-reads the
file, skips every record up to `resume_after_line` and goes on: no duplicate, nothing lost.

A chunk is written by a task on the event loop while the next one is read and parsed
(`_ChunkWrites`): the server stores rows while Python parses, where before each waited for the
other. The file is read on a connection of its own (`_file_reader`), since the session's
connection is busy with the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.pool import NullPool

from erp.core.config import get_settings
from erp.core.db import create_async_db_engine
from erp.core.files import file_store
from erp.core.progress import Progress, no_progress
from erp.features.data_processing.exceptions import ImportFailed, ImportNotFound, InvalidUpload, UploadTooLarge
from erp.features.data_processing.models import DataImportDB, DataImportErrorDB
from erp.features.data_processing.parsing import (
    EXAMPLE_HEADER,
    Batch,
    CsvRecords,
    EncodingProblem,
    HeaderProblem,
    Order,
    OrderAssembler,
    Record,
    RowFailure,
    Utf8Decoder,
    header_columns,
)

logger = logging.getLogger(__name__)

KIND_SALES_ORDERS = "sales_orders"
# The header must be complete within this many bytes of the upload.
MAX_HEADER_BYTES = 64 * 1024


# --- upload ------------------------------------------------------------------------------------


async def checked_upload(body: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """The upload's bytes, passed on as they arrive, checked on the way.

    Raises UploadTooLarge past `limit` bytes, InvalidUpload for an empty file, a header that is
    not the expected one (as soon as the header line has arrived), or bytes that are not
    UTF-8. The whole upload is decoded as it streams (decoding costs far less than storing),
    so a bad byte anywhere in the file is refused at upload time, naming its line.
    """
    decoder = Utf8Decoder()
    records = CsvRecords()
    header_checked = False
    received = 0

    def check_header(found: list[Record]) -> None:
        nonlocal header_checked
        if not found:
            return
        header = found[0]
        if header.fields is None:
            raise InvalidUpload(f"the header line is not readable as CSV ({header.problem})")
        header_columns(header.fields)
        header_checked = True

    try:
        async for chunk in body:
            received += len(chunk)
            if received > limit:
                raise UploadTooLarge(limit)
            decoded = decoder.decode(chunk)
            if not header_checked:
                check_header(records.feed(decoded))
                if not header_checked and received > MAX_HEADER_BYTES:
                    raise InvalidUpload(f"no header line within the first {MAX_HEADER_BYTES:,} bytes")
            yield chunk
        decoded = decoder.decode(b"", final=True)
        if not header_checked:
            check_header(records.feed(decoded) + records.finish())
    except (EncodingProblem, HeaderProblem) as error:
        raise InvalidUpload(str(error)) from None
    if received == 0 or not header_checked:
        raise InvalidUpload(f"the file is empty: expected a header ({EXAMPLE_HEADER}) and rows")


async def create_sales_order_import(
    organization_id: int,
    created_by: int,
    filename: str,
    body: AsyncIterable[bytes],
    *,
    session: AsyncSession,
) -> DataImportDB:
    """Store the uploaded CSV (checked while it streams) and a queued import of it; committed."""
    limit = get_settings().DATA_IMPORT_MAX_UPLOAD_BYTES
    # A problem raised by checked_upload ends the request before the commit: nothing is kept.
    stored = await file_store(session).save(
        checked_upload(body, limit),
        name=filename,
        content_type="text/csv",
        purpose="upload",
        organization_id=organization_id,
    )
    data_import = DataImportDB(
        organization_id=organization_id,
        created_by=created_by,
        kind=KIND_SALES_ORDERS,
        file_id=stored.id,
        filename=filename,
        size_bytes=stored.size_bytes,
        status="queued",
    )
    session.add(data_import)
    await session.commit()
    logger.info(
        "data import %s stored (%s bytes)",
        data_import.id,
        stored.size_bytes,
        extra={"action": "data_import.uploaded", "import_id": data_import.id},
    )
    return data_import


async def set_task_id(import_id: int, task_id: str, *, session: AsyncSession) -> None:
    await session.execute(update(DataImportDB).where(DataImportDB.id == import_id).values(task_id=task_id))
    await session.commit()


async def discard_import(import_id: int, *, session: AsyncSession) -> None:
    """Remove an import that could not be queued, and its file (the caller gets a 503)."""
    data_import = await session.get(DataImportDB, import_id)
    if data_import is not None:
        if data_import.file_id is not None:
            await file_store(session).delete(data_import.file_id)
        await session.delete(data_import)
    await session.commit()


# --- reading ----------------------------------------------------------------------------------


async def get_import(organization_id: int, import_id: int, *, session: AsyncSession) -> DataImportDB:
    data_import = await session.get(DataImportDB, import_id)
    if data_import is None or data_import.organization_id != organization_id:
        raise ImportNotFound(f"organization {organization_id} has no data import {import_id}")
    return data_import


async def first_errors(import_id: int, limit: int, *, session: AsyncSession) -> list[DataImportErrorDB]:
    return list(
        await session.scalars(
            select(DataImportErrorDB)
            .where(DataImportErrorDB.import_id == import_id)
            .order_by(DataImportErrorDB.line_number)
            .limit(limit)
        )
    )


# Errors read per query when the whole list is downloaded.
ERROR_PAGE = 5000


async def all_errors(import_id: int, *, connection: AsyncConnection) -> AsyncIterator[list[tuple[int, str]]]:
    """Every error of the import in line order, a page at a time (keyset pagination)."""
    after = 0
    while True:
        rows = (
            await connection.execute(
                select(DataImportErrorDB.line_number, DataImportErrorDB.reason)
                .where(DataImportErrorDB.import_id == import_id, DataImportErrorDB.line_number > after)
                .order_by(DataImportErrorDB.line_number)
                .limit(ERROR_PAGE)
            )
        ).all()
        if not rows:
            return
        yield [(row.line_number, row.reason) for row in rows]
        after = rows[-1].line_number


# --- the import (worker) -----------------------------------------------------------------------


@dataclass
class _Chunk:
    """Outcomes waiting to be written in one transaction."""

    batches: list[Batch]
    rows: int = 0

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.rows += batch.rows


# A chunk in one statement: the import's row locked and its position checked, the orders, their
# lines, the failed rows and the import's counters. One round trip (with the commit) where a
# lock, the inserts, the errors and the counters each took their own: the chunk's write is the
# import's longest path, and parsing the next chunk waits on it.
#
# - `guard` locks the import's row only if its position is the one this run expects: two runs of
#   one import (a redelivery while the first still runs) take turns on it, and in the one that
#   finds its position taken every other part does nothing and no counters come back.
# - The lines join the orders just inserted on their number: no ids travel back to Python. The
#   planner sorts both sides for that join; comparing bytes (COLLATE "C", the same equality)
#   sorts them several times faster than the database's collation.
# - `not_inserted`: orders already present, normally none. Each says whether this import wrote it
#   in an earlier chunk (its rows were not next to each other in the file: a failure, written by
#   `_fail_repeated_orders`) rather than another import or person (skipped). The `EXISTS` reads
#   the statement's snapshot, which does not hold the rows this statement inserts.
# - The counters: every line of the chunk's orders is imported unless its order was not.
# - Each column comes as one string, its values joined by U+001F (`_column`), which PostgreSQL
#   splits (`string_to_array`): sent as arrays, asyncpg encoded them value by value, about a
#   sixth of the import's Python time, on the chunk's longest path; a string goes out as it is.
_WRITE_CHUNK = text(
    """
    WITH guard AS (
        SELECT id FROM data_imports WHERE id = :import_id AND resume_after_line = :expected_resume FOR UPDATE
    ),
    incoming AS (
        SELECT * FROM unnest(
            string_to_array(:order_numbers, chr(31)),
            string_to_array(:order_dates, chr(31)),
            string_to_array(:customers, chr(31)),
            string_to_array(:currencies, chr(31)),
            string_to_array(:amounts, chr(31)),
            CAST(string_to_array(:line_counts, chr(31)) AS integer[])
        ) AS incoming (order_number, order_date, customer, currency, amount, line_count)
        WHERE EXISTS (SELECT FROM guard)
    ),
    new_orders AS (
        INSERT INTO sales_orders (organization_id, order_number, order_date, customer, currency, amount, import_id)
        SELECT :organization_id, order_number, CAST(order_date AS date), customer, currency, CAST(amount AS numeric),
            :import_id
        FROM incoming
        ON CONFLICT (organization_id, order_number) DO NOTHING
        RETURNING id, order_number
    ),
    new_lines AS (
        INSERT INTO sales_order_lines (order_id, position, product, quantity, unit_price)
        SELECT new_orders.id, line.position, line.product, line.quantity, CAST(line.unit_price AS numeric)
        FROM unnest(
            string_to_array(:line_orders, chr(31)),
            CAST(string_to_array(:positions, chr(31)) AS integer[]),
            string_to_array(:products, chr(31)),
            CAST(string_to_array(:quantities, chr(31)) AS integer[]),
            string_to_array(:unit_prices, chr(31))
        ) AS line (order_number, position, product, quantity, unit_price)
        JOIN new_orders ON new_orders.order_number = line.order_number COLLATE "C"
    ),
    not_inserted AS (
        SELECT incoming.order_number, incoming.line_count, EXISTS (
            SELECT FROM sales_orders
            WHERE organization_id = :organization_id AND order_number = incoming.order_number
                AND import_id = :import_id
        ) AS ours
        FROM incoming
        WHERE NOT EXISTS (SELECT FROM new_orders WHERE new_orders.order_number = incoming.order_number)
    ),
    new_errors AS (
        INSERT INTO data_import_errors (import_id, line_number, reason)
        SELECT :import_id, * FROM unnest(
            CAST(string_to_array(:failure_lines, chr(31)) AS integer[]), string_to_array(:failure_reasons, chr(31))
        )
        WHERE EXISTS (SELECT FROM guard)
        ON CONFLICT (import_id, line_number) DO NOTHING
    ),
    progress AS (
        UPDATE data_imports SET
            resume_after_line = :resume_after_line,
            rows_read = rows_read + :rows_read,
            rows_imported = rows_imported + :lines - (SELECT coalesce(sum(line_count), 0) FROM not_inserted),
            rows_skipped = rows_skipped + (SELECT coalesce(sum(line_count), 0) FROM not_inserted WHERE NOT ours),
            rows_failed = rows_failed + :failures,
            orders_imported = orders_imported + (SELECT count(*) FROM new_orders)
        WHERE id = (SELECT id FROM guard)
        RETURNING resume_after_line, rows_read, rows_imported, rows_skipped, rows_failed
    )
    SELECT resume_after_line, rows_read, rows_imported, rows_skipped, rows_failed, NULL AS repeated_order
    FROM progress
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, order_number FROM not_inserted WHERE ours
    """
)
_INSERT_ERRORS = text(
    """
    INSERT INTO data_import_errors (import_id, line_number, reason)
    SELECT :import_id, * FROM unnest(CAST(:line_numbers AS integer[]), CAST(:reasons AS text[]))
    ON CONFLICT (import_id, line_number) DO NOTHING
    """
)


class _Superseded(Exception):
    """Another run of the same import committed past this one: this run stops."""


@dataclass(frozen=True, slots=True)
class _Written:
    """What a committed chunk left in the import's row: where to resume, and its counters."""

    resume_after_line: int
    rows_read: int
    rows_imported: int
    rows_skipped: int
    rows_failed: int


async def _write_chunk(
    data_import: DataImportDB, chunk: _Chunk, expected_resume: int, *, session: AsyncSession
) -> _Written:
    """Write one chunk's outcomes and the import's progress; commit."""
    failures: list[RowFailure] = [failure for batch in chunk.batches for failure in batch.failures]
    orders = _first_groups(chunk, failures)
    line_orders, positions, products, quantities, unit_prices = _line_columns(orders)
    rows = (
        await session.execute(
            _WRITE_CHUNK,
            {
                "organization_id": data_import.organization_id,
                "import_id": data_import.id,
                "expected_resume": expected_resume,
                "order_numbers": _column([order.order_number for order in orders]),
                "order_dates": _column([order.order_date for order in orders]),
                "customers": _column([order.customer for order in orders]),
                "currencies": _column([order.currency for order in orders]),
                "amounts": _column([order.amount for order in orders]),
                "line_counts": _column([str(len(order.lines)) for order in orders]),
                "line_orders": _column(line_orders),
                "positions": _column(positions),
                "products": _column(products),
                "quantities": _column(quantities),
                "unit_prices": _column(unit_prices),
                "failure_lines": _column([str(failure.line) for failure in failures]),
                "failure_reasons": _column([failure.reason for failure in failures]),
                "resume_after_line": max(batch.through_line for batch in chunk.batches),
                "rows_read": chunk.rows,
                "lines": len(line_orders),
                "failures": len(failures),
            },
        )
    ).all()
    progress = [row for row in rows if row.repeated_order is None]
    if not progress:
        raise _Superseded
    counters = progress[0][:5]
    repeated = {row.repeated_order for row in rows if row.repeated_order is not None}
    if repeated:
        counters = await _fail_repeated_orders(data_import, [o for o in orders if o.order_number in repeated], session)
    await session.commit()
    return _Written(*counters)


_SEPARATOR = "\x1f"


def _column(values: list[str]) -> str:
    """A column's values as one string for `string_to_array(..., chr(31))`.

    No value holds U+001F (parsing refuses control characters in text; the other values are
    digits, dates and reasons this module writes) and none is empty (string_to_array would
    read one empty value as none): both are checked, at C speed.
    """
    joined = _SEPARATOR.join(values)
    if joined.count(_SEPARATOR) != max(len(values) - 1, 0) or "" in values:
        raise ValueError("a value to import holds U+001F or is empty")
    return joined


def _first_groups(chunk: _Chunk, failures: list[RowFailure]) -> list[Order]:
    """The chunk's orders, each from its first group of rows: a later group of the same order
    (its rows were not next to each other in the file) fails, each of its rows added to `failures`."""
    firsts: dict[str, int] = {}
    orders = []
    for batch in chunk.batches:
        for order in batch.orders:
            first = firsts.setdefault(order.order_number, order.row_lines[0])
            if first == order.row_lines[0]:
                orders.append(order)
                continue
            failures.extend(
                RowFailure(
                    line,
                    f"order {order.order_number!r} appeared already at line {first}: the rows of an order must be next to each other",
                )
                for line in order.row_lines
            )
    return orders


async def _fail_repeated_orders(
    data_import: DataImportDB, orders: list[Order], session: AsyncSession
) -> tuple[int, int, int, int, int]:
    """Orders this import wrote in an earlier chunk: their rows here fail (rare: an order's rows
    apart in the file, chunks apart). Same transaction as the chunk; returns the counters."""
    failures = [
        RowFailure(
            line,
            f"order {order.order_number!r} appeared already earlier in this file: the rows of an order must be next to each other",
        )
        for order in orders
        for line in order.row_lines
    ]
    await session.execute(
        _INSERT_ERRORS,
        {
            "import_id": data_import.id,
            "line_numbers": [failure.line for failure in failures],
            "reasons": [failure.reason for failure in failures],
        },
    )
    counters = (
        await session.execute(
            update(DataImportDB)
            .where(DataImportDB.id == data_import.id)
            .values(rows_failed=DataImportDB.rows_failed + len(failures))
            .returning(
                DataImportDB.resume_after_line,
                DataImportDB.rows_read,
                DataImportDB.rows_imported,
                DataImportDB.rows_skipped,
                DataImportDB.rows_failed,
            )
            # The import's object in the session is brought up to date once, at the end.
            .execution_options(synchronize_session=False)
        )
    ).one()
    return tuple(counters)


def _line_columns(orders: list[Order]) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """The lines of `orders` as the statement's columns, each line naming its order."""
    line_orders: list[str] = []
    positions: list[str] = []
    products: list[str] = []
    quantities: list[str] = []
    unit_prices: list[str] = []
    for order in orders:
        for line in order.lines:
            line_orders.append(order.order_number)
            positions.append(str(line.position))
            products.append(line.product)
            quantities.append(str(line.quantity))
            unit_prices.append(line.unit_price)
    return line_orders, positions, products, quantities, unit_prices


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


async def _fail(data_import: DataImportDB, message: str, *, session: AsyncSession) -> ImportFailed:
    data_import.status = "failed"
    data_import.error = message
    data_import.finished_at = datetime.now(UTC)
    await session.commit()
    return ImportFailed(f"data import {data_import.id}: {message}")


async def record_failure(import_id: int, message: str, *, session: AsyncSession) -> None:
    """Mark an import failed after its task gave up (an error it does not retry, or retries spent)."""
    await session.execute(
        update(DataImportDB)
        .where(DataImportDB.id == import_id, DataImportDB.status.in_(("queued", "running")))
        .values(status="failed", error=message, finished_at=func.now())
    )


async def import_sales_orders(
    import_id: int, *, session: AsyncSession, progress: Progress = no_progress
) -> dict[str, Any]:
    """Import the uploaded CSV of `import_id`, resuming after its last committed chunk."""
    data_import = await session.get(DataImportDB, import_id, with_for_update=True)
    if data_import is None:
        raise ImportNotFound(f"data import {import_id} does not exist")
    if data_import.status in ("done", "failed"):
        return summary(data_import)  # a redelivery after it finished: nothing to do
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
    chunk = _Chunk(batches=[])
    writes = _ChunkWrites()
    bytes_read = 0

    def report(written: _Written) -> None:
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

    async def write(chunk: _Chunk) -> None:
        nonlocal resume_after_line
        # Runs after the previous chunk's write finished: resume_after_line is that chunk's.
        written = await _write_chunk(data_import, chunk, resume_after_line, session=session)
        resume_after_line = written.resume_after_line
        report(written)

    async def flush() -> None:
        nonlocal chunk
        if chunk.batches:
            await writes.start(write(chunk))
            chunk = _Chunk(batches=[])

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
            async with _file_reader() as reader:
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
    except _Superseded:
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


@contextlib.asynccontextmanager
async def _file_reader() -> AsyncIterator[AsyncConnection]:
    """A connection of its own, outside any transaction, to read the uploaded file.

    The session's connection is busy writing a chunk while the next one is read and parsed;
    each piece is one short query here, so no transaction stays open. It does not come from
    the worker's pool: that pool has two connections per process (erp.core.bridge), and two
    imports run side by side in one process (threads) would each hold one and wait forever
    for a second. One connection per import costs a few milliseconds.
    """
    engine = create_async_db_engine("erp-worker", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")
    finally:
        await engine.dispose()
