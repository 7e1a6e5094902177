"""The indexes of migrations 0008 and 0009 serve the statements the services send: the
schedules' name search (`name ILIKE '%part%'`, the API's and the console's) reads the trigram
index, a page of an organization's imports (newest first, by key) reads one range of
(organization_id, id) with no sort, and a page of the run ledger one range of (scheduled_at, id). The statements are those the service functions execute, recorded as they run and
explained on tables large enough that the planner picks an index only where it pays. A rare
name's page is asked in an order no index provides (its few matches read through the trigram
index, then sorted), a common name's in the ids' order (the primary key walked to the page's end)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.db import run_with_session
from erp.features.data_processing import upload
from erp.tasks.api import periodic_tasks
from erp.tasks.api.runs import RunCursor, RunFilter, list_runs
from tests.support.recorded_sql import RecordingSession, statements_of

SCHEDULES = 100_000
ORGANIZATIONS = 200
IMPORTS_PER_ORGANIZATION = 500


def plan_of(sync_engine, statement: str) -> dict[str, Any]:
    with sync_engine.connect() as connection:
        return connection.execute(text(f"EXPLAIN (FORMAT JSON) {statement}")).scalar()[0]["Plan"]


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes(child))]


def index_names(plan: dict[str, Any]) -> set[str]:
    return {node["Index Name"] for node in nodes(plan) if "Index Name" in node}


def vacuum_analyze(sync_engine, table: str) -> None:
    """Statistics for the planner, and a GIN index's pending list merged into the index, as
    autovacuum leaves them: rows inserted at once wait in that list, which a search reads whole
    (the planner then prefers a sequential scan until autovacuum has been by)."""
    with sync_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM ANALYZE {table}"))


def insert_schedules(connection, name_sql: str) -> None:
    """SCHEDULES schedules of one interval, named by `name_sql` (an expression of n, 1 to SCHEDULES)."""
    connection.execute(text("INSERT INTO interval_schedules (every, period) VALUES (10, 'seconds')"))
    connection.execute(
        text(
            f"INSERT INTO periodic_tasks (name, task, interval_id, enabled)"
            f" SELECT {name_sql}, 'erp.ping', 1, true FROM generate_series(1, :count) n"
        ),
        {"count": SCHEDULES},
    )


@pytest.fixture
def many_schedules(clean_tables, sync_engine):
    with sync_engine.begin() as connection:
        insert_schedules(
            connection,
            "(ARRAY['nightly export', 'sales report', 'invoice reminders', 'stock sync'])[1 + n % 4]"
            " || ' ' || lpad(n::text, 6, '0')",
        )
    vacuum_analyze(sync_engine, "periodic_tasks")


@pytest.fixture
def many_imports(clean_tables, sync_engine):
    with sync_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO organizations (name) SELECT 'org ' || n FROM generate_series(1, :count) n"),
            {"count": ORGANIZATIONS},
        )
        connection.execute(
            text(
                "INSERT INTO data_imports (organization_id, kind, filename, size_bytes, status, attempts,"
                " resume_after_line, rows_read, rows_imported, rows_skipped, rows_failed, orders_imported)"
                " SELECT 1 + n % :organizations, 'sales_orders', 'orders.csv', 100, 'done', 1, 0, 0, 0, 0, 0, 0"
                " FROM generate_series(1, :count) n"
            ),
            {"organizations": ORGANIZATIONS, "count": ORGANIZATIONS * IMPORTS_PER_ORGANIZATION},
        )
    vacuum_analyze(sync_engine, "data_imports")


@pytest.mark.parametrize("part", ["report 0999", "weekly"], ids=["25 matches", "none"])
def test_a_rare_name_is_found_through_the_trigram_index_not_by_reading_every_row(many_schedules, sync_engine, part):
    """Count and page: left to guess, the planner takes a rare name for 1 % of the rows and
    walks the primary key for the page, reading all 100,000 to find 25."""
    sent = statements_of(
        lambda session: periodic_tasks.list_periodic_tasks(
            session=session, enabled=None, task=None, name=part, limit=50, offset=0
        )
    )
    assert len(sent) == 2 and all("ILIKE" in statement for statement in sent)  # the count, then the page
    # Whatever the planner's guess of the matches: the page's order is one no index provides.
    assert "ORDER BY periodic_tasks.id + 0" in sent[1]
    for statement in sent:
        plan = plan_of(sync_engine, statement)
        assert "ix_periodic_tasks_name_trgm" in index_names(plan), json.dumps(plan, indent=1)
        assert "pk_periodic_tasks" not in index_names(plan), json.dumps(plan, indent=1)
        scanned = {node["Relation Name"] for node in nodes(plan) if node["Node Type"] == "Seq Scan"}
        assert "periodic_tasks" not in scanned  # (a task's one-row schedule table may be read whole)


def test_a_common_name_walks_the_ids_and_stops_at_the_pages_end(many_schedules, sync_engine):
    count, page = statements_of(
        lambda session: periodic_tasks.list_periodic_tasks(
            session=session, enabled=None, task=None, name="sales report", limit=50, offset=0
        )
    )
    assert "ILIKE" in count
    assert re.search(r"ORDER BY periodic_tasks\.id\s+LIMIT 50", page), page  # 25,000 match: 1 in 4 rows
    assert "pk_periodic_tasks" in index_names(plan_of(sync_engine, page))


@pytest.mark.parametrize("before_id", [None, 20_000], ids=["first page", "a page deep down"])
def test_a_page_of_an_organizations_imports_is_one_range_of_its_index(many_imports, sync_engine, before_id):
    sent = statements_of(lambda session: upload.list_imports(7, 21, session=session, before_id=before_id))
    plan = plan_of(sync_engine, sent[0])
    assert index_names(plan) == {"ix_data_imports_organization_id_id"}, json.dumps(plan, indent=1)
    assert not any(node["Node Type"] in ("Sort", "Seq Scan", "Bitmap Heap Scan") for node in nodes(plan))


def generic_plan_of(sync_engine, statement: Any) -> dict[str, Any]:
    """The plan of `statement` as a prepared statement's generic plan: its parameters stay
    parameters (as asyncpg sends them), so the planner cannot read their values, as it does
    not once PostgreSQL has switched a statement run many times to its generic plan."""
    compiled = statement.compile(
        dialect=postgresql.dialect(paramstyle="numeric_dollar"), compile_kwargs={"render_postcompile": True}
    )
    names = compiled.positiontup or []
    values = {f"p{index}": compiled.params[name] for index, name in enumerate(names)}
    arguments = ", ".join(f":p{index}" for index in range(len(names)))
    with sync_engine.connect() as connection:
        connection.execute(text("SET plan_cache_mode = force_generic_plan"))
        connection.exec_driver_sql(f"PREPARE searched AS {compiled}".replace("%", "%%"))
        execute = f"EXECUTE searched({arguments})" if names else "EXECUTE searched"
        plan = connection.execute(text(f"EXPLAIN (FORMAT JSON) {execute}"), values).scalar()[0]["Plan"]
        connection.rollback()
    return plan


@pytest.fixture
def numbered_schedules(clean_tables, sync_engine):
    """100,000 schedules named by number ("bench 000001" ...), as scripts/bench_console makes them."""
    with sync_engine.begin() as connection:
        insert_schedules(connection, "'bench ' || lpad(n::text, 6, '0')")
        # Analyzed, not vacuumed: the rows still wait in the trigram index's pending list, as
        # after any bulk insert until autovacuum comes by, which makes the index dearer to read.
        connection.execute(text("ANALYZE periodic_tasks"))


def test_the_consoles_bounded_count_of_a_rare_name_reads_the_trigram_index_in_a_generic_plan(
    numbered_schedules, sync_engine
):
    """The console counts matches up to a bound (a LIMIT under the count). As a parameter, the
    generic plan guessed that LIMIT at a tenth of the matches and scanned the table from its
    start, reading all 100,000 names to count 100 (44 ms against 4 ms)."""

    async def action(session: AsyncSession) -> list[Any]:
        recording = RecordingSession(session)
        await periodic_tasks.list_periodic_tasks(
            session=recording, enabled=None, task=None, name="bench 0999", limit=50, offset=0, count_limit=10_000
        )
        return recording.statements

    count = run_with_session(action)[0]
    plan = generic_plan_of(sync_engine, count)
    assert "ix_periodic_tasks_name_trgm" in index_names(plan), json.dumps(plan, indent=1)
    scanned = {node["Relation Name"] for node in nodes(plan) if node["Node Type"] == "Seq Scan"}
    assert "periodic_tasks" not in scanned, json.dumps(plan, indent=1)


@pytest.fixture
def a_herd_in_the_ledger(clean_tables, sync_engine):
    """A herd's slot: 20,000 occurrences at one minute, the newest, over 20,000 older ones."""
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO periodic_task_runs (periodic_task_id, periodic_task_name, task_name, scheduled_at,"
                " due_at, message_id, state)"
                " SELECT n % 20000, 'herd', 'erp.ping', slot, slot, 'm-' || n, 'succeeded' FROM ("
                "  SELECT n, timestamptz '2030-01-01 09:00+00' - (n / 20000) * interval '1 hour' AS slot"
                "  FROM generate_series(0, 39999) n) AS runs"
            )
        )
    vacuum_analyze(sync_engine, "periodic_task_runs")


@pytest.mark.parametrize("deeper", [False, True], ids=["newest page", "the next page, by key"])
def test_a_page_of_the_ledger_at_a_herds_slot_reads_only_its_rows(a_herd_in_the_ledger, sync_engine, deeper):
    """Over an index of the slot alone, the newest page read all 20,000 occurrences of the
    herd's slot to sort them by id (at 100,000 due at one minute: 56 ms for a page of 50)."""
    before = RunCursor(datetime(2030, 1, 1, 9, 0, tzinfo=UTC), 30_000) if deeper else None
    (page,) = statements_of(lambda session: list_runs(RunFilter(), session=session, limit=50, offset=0, before=before))
    plan = plan_of(sync_engine, page)
    assert index_names(plan) == {"ix_periodic_task_runs_scheduled_at_id"}, json.dumps(plan, indent=1)
    assert not any("Sort" in node["Node Type"] for node in nodes(plan)), json.dumps(plan, indent=1)
