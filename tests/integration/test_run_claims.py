"""How beat recognises runs a beat that died had already claimed (real PostgreSQL and Redis)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from erp.core.celery_app import celery_app
from erp.tasks.periodic_messages import periodic_run_id
from tests.support.scheduling import (
    add_interval_task,
    broker,
    get_task,
    queued_runs,
    update_task,
    utcnow,
)


@pytest.fixture
def due_run(sync_engine):
    """A task due a second ago, and the id of that run."""
    task_id = add_interval_task(sync_engine, "claimed", every=1, period="hours")
    scheduled_at = (utcnow() - timedelta(seconds=1)).replace(microsecond=0)
    update_task(sync_engine, "claimed", next_run_at=scheduled_at)
    return task_id, scheduled_at, periodic_run_id(task_id, scheduled_at)


def claim(run_id: str, value: str) -> None:
    broker().set(f"erp:beat:run:{run_id}", value, ex=60)


def test_a_pending_claim_whose_message_never_left_is_sent(scheduler, sync_engine, due_run):
    _task_id, scheduled_at, run_id = due_run
    claim(run_id, "pending:a-beat-that-died")
    scheduler.send_due(utcnow())
    assert [run["id"] for run in queued_runs("claimed")] == [run_id]
    row = get_task(sync_engine, "claimed")
    assert row.total_run_count == 1 and row.next_run_at == scheduled_at + timedelta(hours=1)
    assert broker().get(f"erp:beat:run:{run_id}") == b"sent"


def test_a_pending_claim_whose_message_is_queued_is_not_sent_again(scheduler, sync_engine, due_run):
    _task_id, scheduled_at, run_id = due_run
    celery_app.send_task(
        "erp.ping",
        task_id=run_id,
        headers={"periodic_task_name": "claimed", "periodic_task_scheduled_at": scheduled_at.isoformat()},
    )
    claim(run_id, "pending:a-beat-that-died")
    scheduler.send_due(utcnow())
    assert [run["id"] for run in queued_runs("claimed")] == [run_id]
    assert get_task(sync_engine, "claimed").total_run_count == 1


def test_a_pending_claim_whose_task_already_has_a_result_is_not_sent_again(scheduler, sync_engine, due_run):
    _task_id, scheduled_at, run_id = due_run
    celery_app.backend.store_result(run_id, {"pong": True}, "SUCCESS")
    claim(run_id, "pending:a-beat-that-died")
    scheduler.send_due(utcnow())
    assert queued_runs("claimed") == []
    assert get_task(sync_engine, "claimed").next_run_at == scheduled_at + timedelta(hours=1)


def test_a_sent_claim_is_not_sent_again(scheduler, sync_engine, due_run):
    _task_id, _scheduled_at, run_id = due_run
    claim(run_id, "sent")
    scheduler.send_due(utcnow())
    assert queued_runs("claimed") == []
    assert get_task(sync_engine, "claimed").total_run_count == 1
