"""A herd's batch publishes what it has just planned, without reading it back: claimed and
marked sent in one statement, each occurrence once, none another beat holds or has sent.

(The herd's order, Redis away while it is planned, and the faults are in
test_scheduler_herd.py and test_scheduler_faults.py.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
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
