"""Writing one chunk of a sales-order import: its orders, their lines, its failed rows and the
import's counters and resume line, in one transaction.

The import (erp.features.data_processing.import_pipeline) calls `write_chunk` for each chunk,
one after the other in file order. Two ways, the same outcome:

- COPY (`_copy_chunk`), the usual case: the import's row locked if its position is the one
  expected, ids drawn for the chunk's orders, the orders and their lines sent with PostgreSQL's
  `COPY` (what the server stores fastest: about a fifth less of its CPU than an `INSERT ... SELECT`
  of the same rows with `ON CONFLICT`), the failed rows and counters in one last statement.
  `COPY` has no `ON CONFLICT`: an order already present stops it with a unique violation, and
  the chunk is rolled back to a savepoint taken before it and written the second way.
- One statement (`_WRITE_CHUNK`), which skips orders already present (a second import of the
  same file, another import holding the same numbers, an order whose rows were chunks apart).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from operator import attrgetter

import asyncpg
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from erp.features.data_processing.models import DataImportDB
from erp.features.data_processing.orders import Batch, Order, RowFailure

logger = logging.getLogger(__name__)


@dataclass
class Chunk:
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
# - `new_orders` inserts in one global order, by order number (bytes): two imports holding the
#   same order numbers each wait at the first row the other holds and never hold one the other
#   waits for, where inserting in file order deadlocked them (one import failed whole). A
#   deadlock or serialization failure that still happens is retried (erp.core.retries).
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
        ORDER BY order_number COLLATE "C"
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


class Superseded(Exception):
    """Another run of the same import committed past this one: this run stops."""


@dataclass(frozen=True, slots=True)
class Written:
    """What a committed chunk left in the import's row: where to resume, and its counters."""

    resume_after_line: int
    rows_read: int
    rows_imported: int
    rows_skipped: int
    rows_failed: int


async def write_chunk(
    data_import: DataImportDB, chunk: Chunk, expected_resume: int, *, session: AsyncSession
) -> Written:
    """Write one chunk's outcomes and the import's progress; commit."""
    failures: list[RowFailure] = [failure for batch in chunk.batches for failure in batch.failures]
    orders = _first_groups(chunk, failures)
    written = await _copy_chunk(data_import, chunk, orders, failures, expected_resume, session) if orders else None
    if written is None:
        written = await _write_chunk_statement(data_import, chunk, orders, failures, expected_resume, session)
    await session.commit()
    return written


# The import's row locked if its position is the expected one (as `guard` in _WRITE_CHUNK), and
# ids drawn for the chunk's orders, in one round trip; no row back means another run went further.
_CLAIM_ORDER_IDS = text(
    """
    SELECT ARRAY(SELECT nextval('sales_orders_id_seq') FROM generate_series(1, :orders)) AS ids
    FROM data_imports WHERE id = :import_id AND resume_after_line = :expected_resume
    FOR UPDATE
    """
)
# After the orders and lines went in by COPY: every order of the chunk is new, so every line of
# them is imported and none skipped.
_RECORD_COPIED_CHUNK = text(
    """
    WITH new_errors AS (
        INSERT INTO data_import_errors (import_id, line_number, reason)
        SELECT :import_id, * FROM unnest(
            CAST(string_to_array(:failure_lines, chr(31)) AS integer[]), string_to_array(:failure_reasons, chr(31))
        )
        ON CONFLICT (import_id, line_number) DO NOTHING
    )
    UPDATE data_imports SET
        resume_after_line = :resume_after_line,
        rows_read = rows_read + :rows_read,
        rows_imported = rows_imported + :lines,
        rows_failed = rows_failed + :failures,
        orders_imported = orders_imported + :orders
    WHERE id = :import_id
    RETURNING resume_after_line, rows_read, rows_imported, rows_skipped, rows_failed
    """
)
_ORDER_COLUMNS = ("id", "organization_id", "order_number", "order_date", "customer", "currency", "amount", "import_id")
_LINE_COLUMNS = ("order_id", "position", "product", "quantity", "unit_price")


async def _copy_chunk(
    data_import: DataImportDB,
    chunk: Chunk,
    orders: list[Order],
    failures: list[RowFailure],
    expected_resume: int,
    session: AsyncSession,
) -> Written | None:
    """The chunk written with COPY, or None (nothing of it written) when one of its orders is
    present already: the caller writes it with `_WRITE_CHUNK`, which skips those.

    The orders go in by order number (bytes, as `new_orders` in _WRITE_CHUNK: Python compares
    code points, which orders UTF-8 like its bytes), so two imports holding the same numbers
    wait on each other in one order and never deadlock: the one that waits gets its unique
    violation once the other commits, and takes the other way.
    """
    claimed = (
        await session.execute(
            _CLAIM_ORDER_IDS,
            {"import_id": data_import.id, "expected_resume": expected_resume, "orders": len(orders)},
        )
    ).one_or_none()
    if claimed is None:
        raise Superseded
    orders = sorted(orders, key=_ORDER_NUMBER)
    order_copy, line_copy = _copy_data(data_import, orders, claimed.ids)
    connection = await session.connection()
    driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
    # On the driver's connection, in the session's transaction; the ORM needs to know nothing of
    # it (it holds no objects of these tables). Left open on success: the commit ends it.
    await driver.execute("SAVEPOINT chunk_copy")
    try:
        await driver.copy_to_table("sales_orders", source=io.BytesIO(order_copy), columns=_ORDER_COLUMNS)
        await driver.copy_to_table("sales_order_lines", source=io.BytesIO(line_copy), columns=_LINE_COLUMNS)
    except asyncpg.UniqueViolationError:
        await driver.execute("ROLLBACK TO SAVEPOINT chunk_copy")
        logger.debug(
            "data import %s: an order of the chunk is present already; written with ON CONFLICT",
            data_import.id,
            extra={"action": "data_import.chunk_conflict", "import_id": data_import.id},
        )
        return None
    lines = sum(len(order.rows) for order in orders)
    counters = (
        await session.execute(
            _RECORD_COPIED_CHUNK,
            {
                "import_id": data_import.id,
                "failure_lines": _column([str(failure.line) for failure in failures]),
                "failure_reasons": _column([failure.reason for failure in failures]),
                "resume_after_line": max(batch.through_line for batch in chunk.batches),
                "rows_read": chunk.rows,
                "lines": lines,
                "failures": len(failures),
                "orders": len(orders),
            },
        )
    ).one()
    return Written(*counters)


_ORDER_NUMBER = attrgetter("order_number")


def _copy_data(data_import: DataImportDB, orders: list[Order], ids: list[int]) -> tuple[bytes, bytes]:
    """The orders and their lines in COPY's text format; `ids` are the orders' ids, in the order
    of `orders`. Built a column at a time and joined (C code for the whole chunk: about half the
    time of the csv module's writer, which took a tenth of the import's Python time)."""
    organization_id, import_id = str(data_import.organization_id), str(data_import.id)
    order_ids = list(map(str, ids))
    rows = [row for order in orders for row in order.rows]
    line_orders = [order_id for order_id, order in zip(order_ids, orders, strict=True) for _ in order.rows]
    return (
        _copy_text(
            (
                order_ids,
                [organization_id] * len(orders),
                [order.order_number for order in orders],
                [order.order_date for order in orders],
                [order.customer for order in orders],
                [order.currency for order in orders],
                [order.amount for order in orders],
                [import_id] * len(orders),
            ),
            texts=(2, 4),
        ),
        _copy_text(
            (
                line_orders,
                [str(position) for order in orders for position in range(1, len(order.rows) + 1)],
                [row.product for row in rows],
                [str(row.quantity) for row in rows],
                [row.unit_price for row in rows],
            ),
            texts=(2,),
        ),
    )


_COPY_SPECIAL = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(columns: tuple[list[str], ...], texts: tuple[int, ...]) -> bytes:
    """Rows of COPY's text format (tab between fields, a line feed after each row) from columns.

    Only the columns at `texts` may hold a backslash, tab, line feed or carriage return (text
    from the file; the others are digits and dates): joined as they are, and checked at C speed
    (the counts of tabs and line feeds, no backslash or CR); escaped only when one of them does.
    """
    rows = len(columns[0])
    data = "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"
    if data.count("\t") != rows * (len(columns) - 1) or data.count("\n") != rows or "\\" in data or "\r" in data:
        escaped = [
            [value.translate(_COPY_SPECIAL) for value in column] if index in texts else column
            for index, column in enumerate(columns)
        ]
        data = "\n".join(map("\t".join, zip(*escaped, strict=True))) + "\n"
    return data.encode()


async def _write_chunk_statement(
    data_import: DataImportDB,
    chunk: Chunk,
    orders: list[Order],
    failures: list[RowFailure],
    expected_resume: int,
    session: AsyncSession,
) -> Written:
    """The chunk in one statement (`_WRITE_CHUNK`), orders already present skipped."""
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
                "line_counts": _column([str(len(order.rows)) for order in orders]),
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
        raise Superseded
    counters = progress[0][:5]
    repeated = {row.repeated_order for row in rows if row.repeated_order is not None}
    if repeated:
        counters = await _fail_repeated_orders(data_import, [o for o in orders if o.order_number in repeated], session)
    return Written(*counters)


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


def _first_groups(chunk: Chunk, failures: list[RowFailure]) -> list[Order]:
    """The chunk's orders, each from its first group of rows: a later group of the same order
    (its rows were not next to each other in the file) fails, each of its rows added to `failures`."""
    firsts: dict[str, int] = {}
    orders = []
    for batch in chunk.batches:
        for order in batch.orders:
            first_line = order.rows[0].line
            first = firsts.setdefault(order.order_number, first_line)
            if first == first_line:
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
    """The lines of `orders` as the statement's columns, each line naming its order (a column at
    a time, in comprehensions: a chunk has thousands of lines)."""
    rows = [row for order in orders for row in order.rows]
    return (
        [order.order_number for order in orders for _ in order.rows],
        [str(position) for order in orders for position in range(1, len(order.rows) + 1)],
        [row.product for row in rows],
        [str(row.quantity) for row in rows],
        [row.unit_price for row in rows],
    )
