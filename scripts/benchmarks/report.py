"""The sales report against PostgreSQL's own COPY of the same aggregate, and the memory it takes.

For each size (orders of one organization over a year, 100 customers per 1,000 orders, three
currencies) and format: the product's `generate_sales_report` through `run_service`, in a
forked child as in a prefork worker (so its peak memory, VmHWM, is that report's alone), grouped
by customer (the largest report: a row per customer and currency) — stored in the file store as
the product does. Baseline, in the same run: the same aggregate statement run by PostgreSQL and
written with `COPY (...) TO STDOUT (FORMAT csv, HEADER)` to a file, the fastest way to get those
rows out of the database as CSV. Rounds alternate the two ways; medians are printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from erp.core.bridge import run_service, shutdown_bridge
from erp.core.config import get_settings
from erp.features.reports.schemas import SalesReportRequest
from erp.features.reports.service import aggregate_query, generate_sales_report
from scripts.benchmarks.beat import recreate_database
from scripts.benchmarks.common import use_benchmark_environment

DATE_FROM, DATE_TO = date(2026, 1, 1), date(2026, 12, 31)


def connect() -> Any:
    url = make_url(get_settings().sync_database_url).set(drivername="postgresql")
    return psycopg2.connect(url.render_as_string(hide_password=False))


def fill_orders(orders: int) -> int:
    """`orders` sales orders of one new organization, made by PostgreSQL; returns its id."""
    connection = connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE organizations, sales_orders, files RESTART IDENTITY CASCADE")
        cursor.execute("INSERT INTO organizations (name) VALUES ('bench') RETURNING id")
        organization_id = int(cursor.fetchone()[0])
        cursor.execute(
            """
            INSERT INTO sales_orders (organization_id, order_number, order_date, customer, currency, amount)
            SELECT %(organization)s, 'SO-' || n, DATE '2026-01-01' + (n %% 365),
                   'Customer ' || (n %% %(customers)s), (ARRAY['EUR', 'USD', 'CHF'])[1 + n %% 3],
                   round((n %% 10000) / 7.0, 2)
            FROM generate_series(1, %(orders)s) AS n
            """,
            {"organization": organization_id, "customers": max(1, orders // 10), "orders": orders},
        )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE sales_orders")
    connection.close()
    return organization_id


def copy_baseline(organization_id: int, request: SalesReportRequest) -> float:
    """Seconds for PostgreSQL to run the report's aggregate and COPY it out as CSV."""
    compiled = aggregate_query(organization_id, request).compile(dialect=postgresql.psycopg2.dialect())
    connection = connect()
    try:
        with connection.cursor() as cursor, tempfile.TemporaryFile() as sink:
            statement = cursor.mogrify(str(compiled), compiled.params).decode()
            started = time.perf_counter()
            cursor.copy_expert(f"COPY ({statement}) TO STDOUT (FORMAT csv, HEADER)", sink)
            return time.perf_counter() - started
    finally:
        connection.close()


def _report_in_child(organization_id: int, parameters: dict[str, Any], results: Any) -> None:
    started = time.perf_counter()
    outcome = run_service(generate_sales_report, organization_id, parameters)
    results["seconds"] = time.perf_counter() - started
    shutdown_bridge()
    results["rows"] = outcome["rows"]
    results["size_bytes"] = outcome["size_bytes"]
    results["peak_mib"] = _peak_rss_mib()


def _peak_rss_mib() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def product_report(organization_id: int, parameters: dict[str, Any]) -> dict[str, Any]:
    with multiprocessing.Manager() as manager:
        results = manager.dict()
        child = multiprocessing.get_context("fork").Process(
            target=_report_in_child, args=(organization_id, parameters, results)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"bench_report: the report's process exited with {child.exitcode}")
        return dict(results)


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="orders, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", default="csv,xlsx", help="csv, xlsx or both, comma-separated")
    args = parser.parse_args()
    recreate_database()
    print(
        f"{'orders':>10} {'format':>6} {'rows':>8} {'bytes':>11} {'report':>8} {'COPY csv':>9}"
        f" {'COPY / report':>13} {'peak RSS':>9}"
    )
    for orders in (int(value) for value in args.sizes.split(",")):
        organization_id = fill_orders(orders)
        for report_format in args.formats.split(","):
            parameters = {
                "date_from": DATE_FROM.isoformat(),
                "date_to": DATE_TO.isoformat(),
                "group_by": "customer",
                "format": report_format,
            }
            request = SalesReportRequest.model_validate(parameters)
            reports, copies, peaks = [], [], []
            outcome: dict[str, Any] = {}
            for _ in range(args.rounds):
                copies.append(copy_baseline(organization_id, request))
                outcome = product_report(organization_id, parameters)
                reports.append(outcome["seconds"])
                peaks.append(outcome["peak_mib"])
            report_seconds, copy_seconds = statistics.median(reports), statistics.median(copies)
            print(
                f"{orders:>10,} {report_format:>6} {outcome['rows']:>8,} {outcome['size_bytes']:>11,}"
                f" {report_seconds:>7.2f}s {copy_seconds:>8.2f}s {copy_seconds / report_seconds:>13.2f}"
                f" {max(peaks):>7.1f}MB",
                flush=True,
            )
    print("targets: CSV at least 0.8 of COPY (COPY / report >= 0.8); XLSX reported; peak memory flat as orders grow")


if __name__ == "__main__":
    main()
