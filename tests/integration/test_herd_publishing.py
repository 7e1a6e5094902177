"""A herd's batch publishes what it has just planned, without reading it back: claimed and
marked sent in one statement, each occurrence once, none another beat holds or has sent.

(The herd's order, Redis away while it is planned, and the faults are in
test_scheduler_herd.py and test_scheduler_faults.py.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from erp.tasks import db_scheduler
from erp.tasks.beat import run_ledger
from tests.integration.test_scheduler_herd import HERD, add_herd
from tests.support.scheduling import ledger_rows, queued_runs, utcnow


def test_each_occurrence_of_a_herd_is_sent_once_by_its_planning_batch(scheduler, sync_engine, monkeypatch):
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_herd(sync_engine, slot)
    read_back: list[int] = []
    claim_due_runs = run_ledger.claim_due_runs

    def claim_and_count(session, now, limit):
        due = claim_due_runs(session, now, limit)
        read_back.extend(run.run_id for run in due)
        return due

    monkeypatch.setattr(run_ledger, "claim_due_runs", claim_and_count)
    now = utcnow()
    scheduler.plan_due(now, publish=True)
    assert scheduler.publish_due(now) == 0, "nothing was left for the read-back path"

    assert read_back == []
    runs = queued_runs("herd-")
    assert len(runs) == len({run["id"] for run in runs}) == HERD
    rows = ledger_rows(sync_engine, "herd-")
    assert {(row.state, row.publish_count) for row in rows} == {("sent", 1)}
    assert {row.message_id for row in rows} == {run["id"] for run in runs}
    assert all(row.sent_at == now for row in rows)


def test_mark_sending_claims_only_planned_occurrences_no_other_beat_holds(scheduler, sync_engine):
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_herd(sync_engine, slot)
    scheduler.plan_due(utcnow(), publish=False)
    ids = [row.id for row in ledger_rows(sync_engine, "herd-")][:3]
    held, sent, free = ids
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE periodic_task_runs SET state = 'sent' WHERE id = :id"), {"id": sent})

    with sync_engine.connect() as other_beat, other_beat.begin():
        other_beat.execute(text("SELECT 1 FROM periodic_task_runs WHERE id = :id FOR UPDATE"), {"id": held})
        with Session(scheduler.engine) as session, session.begin():
            assert run_ledger.mark_sending(session, ids, utcnow()) == {free}

    states = {row.id: (row.state, row.publish_count) for row in ledger_rows(sync_engine, "herd-")}
    assert states[held] == ("planned", 0)
    assert states[free] == ("sent", 1)


def test_a_batch_whose_publish_fails_leaves_its_occurrences_planned(scheduler, sync_engine):
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_herd(sync_engine, slot)
    publish = scheduler.publisher.publish
    calls = 0

    def fail_the_second_batch(messages, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("Redis went away")
        return publish(messages, **kwargs)

    scheduler.publisher.publish = fail_the_second_batch
    with pytest.raises(ConnectionError):
        scheduler.plan_due(utcnow(), publish=True)
    scheduler.publisher.publish = publish
    rows = ledger_rows(sync_engine, "herd-")
    assert sum(row.state == "sent" for row in rows) == db_scheduler.BATCH_SIZE
    assert sum(row.state == "planned" for row in rows) == HERD - db_scheduler.BATCH_SIZE

    assert scheduler.publish_due(utcnow()) == HERD - db_scheduler.BATCH_SIZE
    runs = queued_runs("herd-")
    assert len(runs) == len({run["id"] for run in runs}) == HERD


# Large enough for the planner's choice in a herd of 50,000 (a join of every due row, then a sort):
# 40,000 schedules, 20,000 of them due.
LARGE_HERD = 40_000


def test_a_batch_locks_and_reads_its_rows_only_not_every_due_row(scheduler, sync_engine):
    """Right after a herd fell due, before PostgreSQL has analysed the table again, the planner
    reckons with a few due rows: the claim must still read the due-time index in order and stop
    at the batch, not read (and sort) every due row for each batch of the herd."""
    with sync_engine.begin() as connection:
        interval_id = connection.execute(
            text("INSERT INTO interval_schedules (every, period) VALUES (1, 'hours') RETURNING id")
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO periodic_tasks (name, task, interval_id, next_run_at)"
                " SELECT 'herd-' || n, 'erp.ping', :interval_id, now() + (60 + n % 3600) * interval '1 second'"
                " FROM generate_series(1, :rows) AS n"
            ),
            {"interval_id": interval_id, "rows": LARGE_HERD},
        )
        connection.execute(text("ANALYZE periodic_tasks"))  # statistics of a table with nothing due
        connection.execute(text("UPDATE periodic_tasks SET next_run_at = now() - interval '1 second' WHERE id % 2 = 0"))
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(scheduler.engine, "before_cursor_execute", record)
    try:
        with Session(scheduler.engine) as session, session.begin():
            claimed = run_ledger.claim_due_rows(session, utcnow(), db_scheduler.BATCH_SIZE)
            session.rollback()
    finally:
        event.remove(scheduler.engine, "before_cursor_execute", record)
    assert len(claimed) == db_scheduler.BATCH_SIZE

    rows_read = 0
    with sync_engine.connect() as connection, connection.begin():
        cursor = connection.connection.driver_connection.cursor()
        for statement, parameters in statements:
            if "FOR UPDATE" in statement:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
                rows_read = max(_rows_read(cursor.fetchone()[0][0]["Plan"]))
            else:
                cursor.execute(statement, parameters)
        connection.rollback()
    assert rows_read == db_scheduler.BATCH_SIZE, "the locking statement read only the rows of its batch"


def _rows_read(plan: dict) -> list[int]:
    """The rows each scan of periodic_tasks in an EXPLAIN ANALYZE plan produced."""
    own = [plan["Actual Rows"]] if plan.get("Relation Name") == "periodic_tasks" else []
    return own + [rows for child in plan.get("Plans", []) for rows in _rows_read(child)]
