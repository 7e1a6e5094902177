"""A herd: many rows due at one slot. Its first messages leave while the rest is being planned.

(`plan_due(now, publish=True)` is how `DatabaseScheduler.tick` plans.)

Planning a row needs only PostgreSQL and publishing needs only Redis, so a tick that planned
the whole herd before publishing any of it made the first occurrence as late as the planning of
the last. Each planned batch is published before the next is planned.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from erp.tasks import db_scheduler
from tests.support.scheduling import queued_runs, utcnow

HERD = 3 * db_scheduler.BATCH_SIZE + 7


def add_herd(sync_engine, slot) -> None:
    with sync_engine.begin() as connection:
        interval_id = connection.execute(
            text("INSERT INTO interval_schedules (every, period) VALUES (1, 'hours') RETURNING id")
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO periodic_tasks (name, task, interval_id, next_run_at)"
                " SELECT 'herd-' || lpad(n::text, 5, '0'), 'erp.ping', :interval_id, :slot"
                " FROM generate_series(1, :herd) AS n"
            ),
            {"interval_id": interval_id, "slot": slot, "herd": HERD},
        )


def test_the_first_messages_of_a_herd_leave_before_the_rest_is_planned(scheduler, sync_engine):
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_herd(sync_engine, slot)
    still_due_at_each_publish: list[int] = []
    publish = scheduler.publisher.publish

    def publish_and_look(messages, **kwargs):
        with sync_engine.connect() as connection:
            still_due = connection.execute(
                text("SELECT count(*) FROM periodic_tasks WHERE name LIKE 'herd-%' AND next_run_at <= :slot"),
                {"slot": slot},
            ).scalar_one()
        if messages:
            still_due_at_each_publish.append(still_due)
        return publish(messages, **kwargs)

    scheduler.publisher.publish = publish_and_look
    now = utcnow()
    scheduler.plan_due(now, publish=True)  # as a tick plans
    scheduler.publish_due(now)

    assert len(queued_runs("herd-")) == HERD, "the whole herd went out in one tick, once each"
    assert still_due_at_each_publish[0] == HERD - db_scheduler.BATCH_SIZE, (
        "the first batch is published as soon as it is planned"
    )
    assert still_due_at_each_publish == sorted(still_due_at_each_publish, reverse=True)


def test_while_redis_is_away_the_whole_herd_is_still_planned_on_time(scheduler, sync_engine):
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_herd(sync_engine, slot)

    def redis_is_away(messages, **kwargs):
        raise ConnectionError("Redis is away")

    scheduler.publisher.publish = redis_is_away
    with pytest.raises(ConnectionError):
        scheduler.plan_due(utcnow(), publish=True)

    with sync_engine.connect() as connection:
        planned = connection.execute(
            text("SELECT count(*) FROM periodic_task_runs WHERE periodic_task_name LIKE 'herd-%' AND state = 'planned'")
        ).scalar_one()
    assert planned == HERD, "every occurrence of the slot is in the ledger, waiting for Redis"
    assert queued_runs("herd-") == []
