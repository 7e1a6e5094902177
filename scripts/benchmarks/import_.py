"""Sales-order CSV import: rows per second against PostgreSQL COPY of the same rows, and the
worker's peak memory as the file grows.

For each size: a CSV of valid rows (orders of 1-3 lines) is written to disk, stored through the
upload service, and imported by a real prefork worker (one child, started fresh for each size
so its peak RSS, VmHWM, belongs to that size's imports alone). The import's time is its row's
started_at -> finished_at. Each size runs `--rounds` rounds (7) (COPY into the same tables, then the
import, each on empty tables) and reports the medians and each round's ratio. Two baselines,
in the same run on the same rows:

- COPY into the same tables: the orders and lines the import writes, prepared beforehand in
  Python (not timed), loaded with `COPY sales_orders` and `COPY sales_order_lines` (same
  indexes, constraints and foreign keys): the cost of storing the rows, and nothing else;
- bare COPY: the CSV file as it is, `COPY ... FROM STDIN (FORMAT csv, HEADER)` into a table
  with the CSV's typed columns and no index: the fastest way to get those bytes into PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import statistics
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.pool import NullPool

from erp.core.config import get_settings
from erp.core.db import create_async_db_engine
from erp.features.data_processing import upload
from scripts.benchmarks.beat import recreate_database
from scripts.benchmarks.common import use_benchmark_environment
from tests.support import sales_csv
from tests.support.processes import ManagedProcess, start_worker

COPY_TABLE = """
CREATE TABLE IF NOT EXISTS bench_copy (
    order_number text, order_date date, customer text, currency char(3), product text,
    quantity integer, unit_price numeric(14, 2)
)
"""


def connect():
    return psycopg2.connect(
        make_url(get_settings().sync_database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write(",".join(sales_csv.HEADER) + "\n")
        for row in sales_csv.good_rows(rows, seed=rows):
            file.write(",".join(row) + "\n")


def copy_seconds(path: Path) -> float:
    connection = connect()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(COPY_TABLE)
            cursor.execute("TRUNCATE bench_copy")
        with connection, connection.cursor() as cursor, path.open("rb") as file:
            started = time.perf_counter()
            cursor.copy_expert("COPY bench_copy FROM STDIN WITH (FORMAT csv, HEADER)", file)
        return time.perf_counter() - started
    finally:
        connection.close()


def same_tables_copy_seconds(path: Path, organization_id: int) -> float:
    """COPY the file's orders and lines into sales_orders and sales_order_lines; then empty them."""
    orders = io.StringIO()
    lines = io.StringIO()
    order_writer, line_writer = csv.writer(orders), csv.writer(lines)
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        next(reader)
        current, order_id, position, total, order_row = None, 0, 0, Decimal(0), None
        for number, day, customer, currency, product, quantity, price in reader:
            if number != current:
                if order_row is not None:
                    order_writer.writerow([*order_row, total])
                current, order_id, position, total = number, order_id + 1, 0, Decimal(0)
                order_row = [order_id, organization_id, number, day, customer, currency]
            position += 1
            total += int(quantity) * Decimal(price)
            line_writer.writerow([order_id, position, product, quantity, price])
        if order_row is not None:
            order_writer.writerow([*order_row, total])
    orders.seek(0)
    lines.seek(0)
    connection = connect()
    try:
        with connection, connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.copy_expert(
                "COPY sales_orders (id, organization_id, order_number, order_date, customer, currency, amount)"
                " FROM STDIN WITH (FORMAT csv)",
                orders,
            )
            cursor.copy_expert(
                "COPY sales_order_lines (order_id, position, product, quantity, unit_price) FROM STDIN WITH (FORMAT csv)",
                lines,
            )
        seconds = time.perf_counter() - started
        with connection, connection.cursor() as cursor:
            cursor.execute("TRUNCATE sales_orders, sales_order_lines CASCADE")
            cursor.execute("SELECT setval('sales_orders_id_seq', 1, false)")
        return seconds
    finally:
        connection.close()


def reset_sales() -> tuple[int, int]:
    """Empty the sales tables; a fresh organization for the next import."""
    connection = connect()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("TRUNCATE sales_orders, sales_order_lines, data_imports, data_import_errors, files CASCADE")
            cursor.execute("INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"bench {time.time()}",))
            organization_id = cursor.fetchone()[0]
            cursor.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (f"bench-{time.time()}@example.com",))
            user_id = cursor.fetchone()[0]
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        return organization_id, user_id
    finally:
        connection.close()


async def store_upload(path: Path, organization_id: int, user_id: int) -> int:
    async def pieces() -> AsyncIterator[bytes]:
        with path.open("rb") as file:
            while piece := file.read(64 * 1024):
                yield piece

    engine = create_async_db_engine("erp-bench", poolclass=NullPool)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            data_import = await upload.create_sales_order_import(
                organization_id, user_id, path.name, pieces(), session=session
            )
            return data_import.id
    finally:
        await engine.dispose()


def import_figures(import_id: int) -> tuple[float, int]:
    connection = connect()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT extract(epoch FROM finished_at - started_at), rows_imported FROM data_imports WHERE id = %s",
                (import_id,),
            )
            seconds, rows = cursor.fetchone()
        return float(seconds), rows
    finally:
        connection.close()


def child_pid(worker: ManagedProcess) -> int:
    pid = worker.process.pid
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def measure(path: Path, rows: int, rounds: int) -> dict[str, Any]:
    """`rounds` rounds of COPY into the same tables then the import, each on empty tables; the
    medians, and each round's ratio (this machine's timings vary by a fifth from run to run)."""
    # Imported here, after use_benchmark_environment: the task module registers its running
    # limit at import, which reads the settings.
    from erp.features.data_processing.tasks import import_sales_orders

    copy = copy_seconds(path)
    # INFO: start_worker waits for the "ready." line, which WARNING would hide.
    worker = start_worker("--concurrency", "1", name="bench-import-worker", env={"LOG_LEVEL": "INFO"})
    try:
        child = child_pid(worker)
        idle_rss = memory_kib(child, "VmRSS")
        copies, imports = [], []
        for _ in range(rounds):
            organization_id, _user_id = reset_sales()
            copies.append(same_tables_copy_seconds(path, organization_id))
            organization_id, user_id = reset_sales()
            import_id = asyncio.run(store_upload(path, organization_id, user_id))
            import_sales_orders.apply_async((import_id,)).get(timeout=3600)
            seconds, imported = import_figures(import_id)
            assert imported == rows, f"imported {imported} of {rows} rows"
            imports.append(seconds)
        peak_rss = memory_kib(child, "VmHWM")
    finally:
        worker.stop()
    return {
        "rows": rows,
        "import_rate": rows / statistics.median(imports),
        "copy_rate": rows / copy,
        "same_tables_rate": rows / statistics.median(copies),
        "round_ratios": [copied / imported for copied, imported in zip(copies, imports, strict=True)],
        "idle_mib": idle_rss / 1024,
        "peak_mib": peak_rss / 1024,
        "mb": path.stat().st_size / 1e6,
    }


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="10000,100000", help="rows per file, comma-separated (add 1000000 for the largest point)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds of COPY and import per size (medians)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    recreate_database()
    results: list[dict[str, Any]] = []
    try:
        run_sizes(sizes, args.rounds, results)
    finally:
        for process in ManagedProcess.started:  # a worker that failed to start is stopped too
            process.stop(timeout=10)
    print(
        "target: import >= 0.9 of COPY into the same tables at 100,000 and 1,000,000 rows;"
        " the worker's peak RSS flat as the file grows"
    )


def run_sizes(sizes: list[int], rounds: int, results: list[dict[str, Any]]) -> None:
    with TemporaryDirectory() as folder:
        for rows in sizes:
            path = Path(folder) / f"orders-{rows}.csv"
            write_csv(path, rows)
            results.append(measure(path, rows, rounds))
            path.unlink()
            result = results[-1]
            print(
                f"{rows:>9,} rows ({result['mb']:.1f} MB): import {result['import_rate']:>8,.0f} rows/s;"
                f" COPY into the same tables {result['same_tables_rate']:>9,.0f} rows/s"
                f" (import / it {result['import_rate'] / result['same_tables_rate']:.2f},"
                f" rounds {', '.join(f'{ratio:.2f}' for ratio in result['round_ratios'])});"
                f" bare COPY {result['copy_rate']:>9,.0f} rows/s"
                f" (import / it {result['import_rate'] / result['copy_rate']:.2f});"
                f" worker child RSS idle {result['idle_mib']:.0f} MiB, peak {result['peak_mib']:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
