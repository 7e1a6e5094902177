"""Migration 0008's indexes at 100,000 schedules and 500,000 imports: each statement timed
without them (the schema of 0007) and with them, in the same run, on the same rows.

The statements are the ones the service functions send, recorded as they run: the schedules'
name search of `GET /api/v1/admin/periodic-tasks?name=` and the console (`name ILIKE '%part%'`,
its count and its page of 50; for a rare name, also the page in the ids' order, as it was asked
before a rare name's matches were sorted instead), and a page of an organization's imports of `GET
/api/v1/organizations/{id}/imports` (newest first, 21 rows: a page of 20 and whether there is
more), its first page and one deep down by key. Each is run N times on one connection, in
turn with the others (a busy moment of the machine weighs on all alike); printed: the plan's
indexes, the median without and with, and the ratio without / with (above 1: quicker with).

The rows are filled by PostgreSQL itself (generate_series), then vacuumed and analyzed as
autovacuum leaves a table. Own database (erp_bench_indexes, or BENCH_DATABASE_URL), dropped
and made again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

BENCH_DEFAULTS = {"BENCH_DATABASE_URL": "postgresql://root@127.0.0.1:5432/erp_bench_indexes"}
for _name, _value in BENCH_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

from alembic import command  # noqa: E402  (after the environment above)
from alembic.config import Config  # noqa: E402

from scripts.benchmarks.beat import REPO_ROOT, connect, recreate_database  # noqa: E402
from scripts.benchmarks.common import use_benchmark_environment  # noqa: E402
from tests.support.recorded_sql import statements_of  # noqa: E402

FILL = [
    "SET session_replication_role = replica",  # no NOTIFY and next_run_at trigger per row
    "INSERT INTO interval_schedules (every, period) VALUES (10, 'seconds')",
    """INSERT INTO periodic_tasks (name, task, interval_id, enabled)
    SELECT (ARRAY['nightly export', 'sales report', 'invoice reminders', 'stock sync'])[1 + n % 4]
        || ' ' || lpad(n::text, 6, '0'), 'erp.ping', 1, true
    FROM generate_series(1, :schedules) AS n""",
    "INSERT INTO organizations (name) SELECT 'organization ' || n FROM generate_series(1, :organizations) AS n",
    # Imports of all organizations interleaved in time, as members upload them.
    """INSERT INTO data_imports (organization_id, kind, filename, size_bytes, status, attempts,
        resume_after_line, rows_read, rows_imported, rows_skipped, rows_failed, orders_imported)
    SELECT 1 + n % :organizations, 'sales_orders', 'orders.csv', 1000, 'done', 1, 0, 10, 10, 0, 0, 2
    FROM generate_series(1, :imports) AS n""",
    "SET session_replication_role = DEFAULT",
]
ORGANIZATION = 7  # whose imports are paged
# How the name search orders a rare name's page (periodic_tasks.NAME_SEARCH_SORTED_MATCHES), and
# how it ordered every page before: the plan that walks the primary key.
SORTED_ORDER = "ORDER BY periodic_tasks.id + 0"
ID_ORDER = "ORDER BY periodic_tasks.id"


def matches(part: str) -> int:
    connection = connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM periodic_tasks WHERE name ILIKE %s", (f"%{part}%",))
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def queries(imports: int, organizations: int) -> list[tuple[str, str]]:
    from erp.features.data_processing import upload
    from erp.tasks.api import periodic_tasks

    def search(part: str) -> Callable[[Any], Awaitable[Any]]:
        return lambda session: periodic_tasks.list_periodic_tasks(
            session=session, enabled=None, task=None, name=part, limit=50, offset=0
        )

    found: list[tuple[str, str]] = []
    for part in ("sales report", "sales report 01", "report 0999", "09999", "weekly"):
        count, page = statements_of(search(part))
        found += [(f"search {part!r} ({matches(part)} match), count", count), (f"search {part!r}, page of 50", page)]
        if SORTED_ORDER in page:  # a rare name: also the page as it was asked before, in the ids' order
            found.append((f"search {part!r}, page, by id as before", page.replace(SORTED_ORDER, ID_ORDER)))
    deep = imports // 10  # nine tenths of the organization's imports are newer (ids grow with time)
    for label, before in (("first page", None), ("page 90% down", deep)):
        (page,) = statements_of(
            lambda session, before=before: upload.list_imports(ORGANIZATION, 21, session=session, before_id=before)
        )
        found.append((f"imports of one of {organizations:,}, {label}", page))
    return found


def plan_indexes(cursor: Any, statement: str) -> str:
    cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}")
    plan = cursor.fetchone()[0][0]["Plan"]
    nodes, names = [plan], []
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if "_schedules" in node.get("Relation Name", node.get("Index Name", "")):
            continue  # a schedule's own row, joined to its task
        if "Index Name" in node:
            names.append(node["Index Name"])
        elif node["Node Type"] == "Seq Scan":
            names.append(f"seq scan {node['Relation Name']}")
    return ", ".join(sorted(set(names))) or "-"


def medians_ms(statements: list[str], rounds: int) -> tuple[list[float], list[str]]:
    connection = connect()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            plans = [plan_indexes(cursor, statement) for statement in statements]
            times: list[list[float]] = [[] for _ in statements]
            for _ in range(rounds + 1):  # the first round warms the cache
                for index, statement in enumerate(statements):
                    started = time.perf_counter()
                    cursor.execute(statement)
                    cursor.fetchall()
                    times[index].append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return [statistics.median(each[1:]) for each in times], plans


def vacuum_analyze() -> None:
    connection = connect()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE periodic_tasks, data_imports")
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--imports", type=int, default=500_000)
    parser.add_argument("--organizations", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=30, help="runs of each statement (the median is printed)")
    args = parser.parse_args()
    use_benchmark_environment()
    recreate_database()
    started = time.perf_counter()
    connection = connect()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in FILL:
                for name in ("schedules", "organizations", "imports"):
                    statement = statement.replace(f":{name}", str(getattr(args, name)))
                cursor.execute(statement)
    finally:
        connection.close()
    print(f"filled {args.schedules:,} schedules and {args.imports:,} imports in {time.perf_counter() - started:.1f} s")
    found = queries(args.imports, args.organizations)
    statements = [statement for _, statement in found]
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    command.downgrade(config, "0007")  # the baseline: the indexes before 0008
    vacuum_analyze()
    without, plans_without = medians_ms(statements, args.rounds)
    command.upgrade(config, "0008")
    vacuum_analyze()
    with_indexes, plans_with = medians_ms(statements, args.rounds)
    print(f"{'statement':<52} {'0007':>9} {'0008':>9} {'0007 / 0008':>12}   (median of {args.rounds})")
    for (label, _), before, after, plan_before, plan_after in zip(
        found, without, with_indexes, plans_without, plans_with, strict=True
    ):
        print(f"{label:<52} {before:>6.2f} ms {after:>6.2f} ms {before / after:>12.1f}")
        print(f"{'':<4}plan: {plan_before}  ->  {plan_after}")


if __name__ == "__main__":
    main()
