"""Beat sends again what the broker lost (erp.tasks.beat.recovery), with the real PostgreSQL and
Redis: a scheduler in this process, whose steps the test calls with its own `now` and clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from erp.tasks.beat import recovery as run_recovery
from erp.tasks.beat.recovery import EPOCH_KEY, Recovery, RecoveryLimits
from tests.support.scheduling import add_interval_task, broker, ledger_rows, queued_runs, utcnow

LIMITS = RecoveryLimits(resend_after_seconds=30, worker_lost_after_seconds=20, max_attempts=3)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def recovering(scheduler):
    """The scheduler, its recovery on a clock the test moves (every rule due at each call)."""
    clock = FakeClock()
    scheduler._recovery = Recovery(celery_app, scheduler._redis, LIMITS, clock=clock)

    def recover(now, *, healthy_for: float = 60.0) -> int:
        clock.now += 10
        return scheduler._recovery.recover(scheduler.engine, now, healthy_for=healthy_for)

    return scheduler, recover


def step(scheduler, now) -> None:
    scheduler.schedule_unscheduled(now)
    scheduler.send_due(now)


def set_runs(sync_engine, name: str, **values) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with sync_engine.begin() as connection:
        connection.execute(
            text(f"UPDATE periodic_task_runs SET {assignments} WHERE periodic_task_name = :name"),
            {**values, "name": name},
        )


def test_what_was_sent_before_redis_lost_its_data_is_sent_again_once(recovering, sync_engine):
    scheduler, recover = recovering
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "lost-with-redis", every=1, period="hours", next_run_at=now)
    recover(now)  # the marker is written
    step(scheduler, now)
    assert len(queued_runs("lost-with-redis")) == 1
    broker().flushdb()  # Redis restarted without persistence: queue and marker are gone
    later = now + timedelta(seconds=2)
    assert recover(later) == 1
    step(scheduler, later)
    (run,) = queued_runs("lost-with-redis")
    (row,) = ledger_rows(sync_engine, "lost-with-redis")
    assert (row.state, row.publish_count, run["id"]) == ("sent", 2, row.message_id)
    assert recover(later + timedelta(seconds=1)) == 0, "the new marker is known: nothing more is lost"
    assert broker().get(EPOCH_KEY) is not None


def test_a_second_beat_does_not_send_again_what_the_first_has_just_sent_again(recovering, sync_engine):
    scheduler, recover = recovering
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "two-beats", every=1, period="hours", next_run_at=now)
    other = Recovery(celery_app, scheduler._redis, LIMITS, clock=FakeClock())
    recover(now)
    other.recover(scheduler.engine, now, healthy_for=0)
    step(scheduler, now)
    broker().flushdb()
    later = now + timedelta(seconds=2)
    assert recover(later) == 1
    step(scheduler, later)
    # The other beat sees a marker it does not know, written after the first sent again.
    assert other.recover(scheduler.engine, later + timedelta(seconds=1), healthy_for=0) == 0
    assert len(queued_runs("two-beats")) == 1


def test_a_sent_occurrence_no_longer_in_its_queue_is_sent_again_after_a_while(recovering, sync_engine):
    scheduler, recover = recovering
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "held-by-a-dead-worker", every=1, period="hours", next_run_at=now)
    recover(now)
    step(scheduler, now)
    assert recover(now + timedelta(seconds=40)) == 0, "still in its queue: a worker will take it"
    broker().delete("celery")  # taken by a worker that died before it started it
    assert recover(now + timedelta(seconds=10)) == 0, "not before RUN_LEDGER_RESEND_AFTER_SECONDS"
    assert recover(now + timedelta(seconds=40)) == 1
    step(scheduler, now + timedelta(seconds=40))
    assert len(queued_runs("held-by-a-dead-worker")) == 1


def test_an_occurrence_started_by_a_worker_that_is_gone_runs_again(recovering, sync_engine):
    scheduler, recover = recovering
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "worker-gone", every=1, period="hours", next_run_at=now)
    recover(now)
    step(scheduler, now)
    broker().delete("celery")
    set_runs(sync_engine, "worker-gone", state="started", worker="celery@elsewhere:4242", started_at=now)
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO worker_heartbeats (node, pids, started_at, seen_at)"
                " VALUES ('celery@elsewhere', '{4242}', now(), now())"
            )
        )
    assert recover(now, healthy_for=60) == 0, "its process is alive and listed"
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE worker_heartbeats SET pids = '{4343}'"))
    assert recover(now, healthy_for=5) == 0, "beat has not been up long enough to judge heartbeats"
    assert recover(now, healthy_for=60) == 1, "a heartbeat after the start no longer lists it"
    step(scheduler, now + timedelta(seconds=1))
    assert len(queued_runs("worker-gone")) == 1
    set_runs(sync_engine, "worker-gone", state="started", worker="celery@vanished:77", started_at=now)
    assert recover(now, healthy_for=60) == 1, "no heartbeat at all"


def test_an_occurrence_sent_too_often_without_an_outcome_fails_with_an_alert(recovering, sync_engine):
    scheduler, recover = recovering
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "never-runs", every=1, period="hours", next_run_at=now)
    recover(now)
    step(scheduler, now)
    set_runs(sync_engine, "never-runs", publish_count=LIMITS.max_attempts)
    broker().flushdb()
    assert recover(now + timedelta(seconds=1)) == 0
    (row,) = ledger_rows(sync_engine, "never-runs")
    assert (row.state, row.error_type) == ("failed", "NotRun")
    assert "sent 3 times without an outcome" in row.error_message
    with sync_engine.connect() as connection:
        alerts = connection.execute(text("SELECT kind, message FROM periodic_task_alerts")).all()
    assert [alert.kind for alert in alerts] == ["failure"] and "never-runs" in alerts[0].message


def test_the_marker_tells_a_loss_from_a_first_start(recovering):
    scheduler, _ = recovering
    broker().flushdb()
    epoch = run_recovery.BrokerEpoch(scheduler._redis)
    now = utcnow()
    assert epoch.loss_noticed_at(now) == now.replace(tzinfo=now.tzinfo), "no marker: whatever was sent is lost"
    assert epoch.loss_noticed_at(now) is None
    assert run_recovery.BrokerEpoch(scheduler._redis).loss_noticed_at(now) is None, "a beat starting anew"


def test_redis_holds_the_marker_of_its_data_before_the_first_message_of_a_beat(scheduler, sync_engine):
    """A beat killed after its first messages and before writing the marker would leave Redis
    looking as if it had lost its data: the next beat would send all of those again."""
    add_interval_task(sync_engine, "first-message", every=1, period="hours", next_run_at=utcnow())
    marker_at_each_publish: list[bool] = []
    publish = scheduler.publisher.publish

    def publish_and_look(messages, **kwargs):
        if messages:
            marker_at_each_publish.append(bool(broker().exists(EPOCH_KEY)))
        return publish(messages, **kwargs)

    scheduler.publisher.publish = publish_and_look
    scheduler.sync_every_seconds = 0  # the tick's wait: none
    scheduler.tick()
    assert len(queued_runs("first-message")) == 1
    assert marker_at_each_publish == [True]
