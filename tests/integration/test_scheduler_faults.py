"""Rows beat cannot use, one-off and re-enabled tasks, and a beat that freezes: real PostgreSQL,
Redis and (where it matters) real beat processes."""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.support.processes import start_beat
from tests.support.scheduling import (
    add_interval_task,
    beat_holds_row_locks,
    get_task,
    queued_runs,
    update_task,
    utcnow,
    wait_for,
)


def step(scheduler, now) -> None:
    scheduler.schedule_unscheduled(now)
    scheduler.send_due(now)


# (name, SQL making the row unusable, a fragment of its disabled_reason)
BROKEN_ROWS = [
    (
        "huge-interval",
        "UPDATE interval_schedules SET every = 3000000, period = 'days' WHERE id = {interval_id}",
        "maximum",
    ),
    (
        "args-object",
        'UPDATE periodic_tasks SET args = \'{{"not": "a list"}}\' WHERE id = {id}',
        "args must be a JSON array",
    ),
    ("headers-array", "UPDATE periodic_tasks SET headers = '[1, 2]' WHERE id = {id}", "headers must be a JSON object"),
    (
        "no-route",
        "UPDATE periodic_tasks SET exchange = 'nowhere', routing_key = 'anything' WHERE id = {id}",
        "exchange 'nowhere' has no queue bound to it",
    ),
    (
        "bad-crontab",
        "WITH c AS (INSERT INTO crontab_schedules (minute, hour, day_of_week, day_of_month, month_of_year, timezone)"
        " VALUES ('61', '*', '*', '*', '*', 'UTC') RETURNING id)"
        " UPDATE periodic_tasks SET interval_id = NULL, crontab_id = (SELECT id FROM c) WHERE id = {id}",
        "minute '61'",
    ),
    (
        "bad-zone",
        "WITH c AS (INSERT INTO crontab_schedules (minute, hour, day_of_week, day_of_month, month_of_year, timezone)"
        " VALUES ('*', '*', '*', '*', '*', 'Mars/Olympus') RETURNING id)"
        " UPDATE periodic_tasks SET interval_id = NULL, crontab_id = (SELECT id FROM c) WHERE id = {id}",
        "Mars/Olympus",
    ),
]


def test_unusable_rows_are_disabled_with_a_reason_while_healthy_ones_keep_firing(empty_scheduler, sync_engine):
    for number in range(5):
        add_interval_task(sync_engine, f"healthy-{number}", every=1)
    for name, statement, _ in BROKEN_ROWS:
        task_id = add_interval_task(sync_engine, name, every=1)
        interval_id = get_task(sync_engine, name).interval_id
        with sync_engine.begin() as connection:
            connection.execute(text(statement.format(id=task_id, interval_id=interval_id)))
    beat = start_beat()
    try:
        for name, _, fragment in BROKEN_ROWS:
            row = wait_for(lambda name=name: not (r := get_task(sync_engine, name)).enabled and r, timeout=10)
            assert row.disabled_reason is not None and fragment in row.disabled_reason, (name, row.disabled_reason)
        started = utcnow()
        time.sleep(4)
        assert beat.process.poll() is None, f"beat stopped:\n{beat.output()[-3000:]}"
    finally:
        assert beat.stop() == 0, beat.output()[-3000:]
    for number in range(5):
        times = [run["scheduled_at"] for run in queued_runs(f"healthy-{number}") if run["scheduled_at"] >= started]
        assert len(times) >= 3 and all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times)), times
    assert all(not queued_runs(name) for name, *_ in BROKEN_ROWS if name != "huge-interval")


@pytest.mark.parametrize("policy", ["run_once", "skip", "run_all"])
def test_a_one_off_task_seen_late_runs_exactly_once(scheduler, sync_engine, policy):
    now = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "late-one-off", every=10, one_off=True, misfire_policy=policy, next_run_at=now)
    step(scheduler, now + timedelta(seconds=50))
    step(scheduler, now + timedelta(seconds=120))
    assert [run["scheduled_at"] for run in queued_runs("late-one-off")] == [now]
    row = get_task(sync_engine, "late-one-off")
    assert (row.enabled, row.total_run_count) == (False, 1) and row.disabled_reason.startswith("finished")


def test_a_task_enabled_again_continues_at_its_next_slot_without_catching_up(scheduler, sync_engine):
    start = utcnow().replace(microsecond=0)
    add_interval_task(sync_engine, "hourly", every=1, period="hours", misfire_policy="run_all", next_run_at=start)
    step(scheduler, start)
    assert len(queued_runs("hourly")) == 1
    update_task(sync_engine, "hourly", enabled=False)
    week_later = start + timedelta(days=7, minutes=30)
    update_task(sync_engine, "hourly", enabled=True)  # the trigger resets next_run_at
    step(scheduler, week_later)
    assert len(queued_runs("hourly")) == 1, "disabled time is not missed time"
    row = get_task(sync_engine, "hourly")
    assert row.next_run_at == start + timedelta(days=7, hours=1), "the next slot of its grid"
    step(scheduler, start + timedelta(days=7, hours=1, seconds=1))
    assert [run["scheduled_at"] for run in queued_runs("hourly")] == [start, start + timedelta(days=7, hours=1)]


def test_a_frozen_beat_loses_its_rows_to_another_beat_within_30_seconds(empty_scheduler, sync_engine):
    """Two beats side by side; one freezes while it holds rows. The other takes them over once
    PostgreSQL ends the frozen session (the stall timeout), says so, and does not spin on the
    locked rows meanwhile."""
    stall = 5
    env = {"CELERY_BEAT_STALL_TIMEOUT_SECONDS": str(stall)}
    names = [f"frozen-{number:03d}" for number in range(300)]
    for name in names:
        add_interval_task(sync_engine, name, every=1)
    frozen = start_beat(env=env, name="beat-frozen")
    other = start_beat(env=env, name="beat-other")
    pid = frozen.process.pid
    try:
        wait_for(
            lambda: heartbeat_pids(sync_engine) >= {pid, other.process.pid},
            timeout=20,
            message="both beats tick",
        )
        wait_for(lambda: len(queued_runs("frozen-")) >= 2 * len(names), timeout=20, message="the beats send every row")
        # Stop it while it holds rows locked: schedule rows it is planning, or occurrences it is
        # publishing (each tick does both, for a batch at a time).
        held = ("periodic_tasks", "periodic_task_runs")
        for _ in range(500):
            if beat_holds_row_locks(sync_engine, pid, held):
                os.kill(pid, signal.SIGSTOP)
                if beat_holds_row_locks(sync_engine, pid, held):
                    break
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
        else:
            pytest.fail("never caught beat holding rows locked")
        stopped_at = utcnow()
        commits_before = transactions_committed(sync_engine)

        def every_row_fired_again() -> bool:
            fired = {run["name"] for run in queued_runs("frozen-") if run["scheduled_at"] > stopped_at}
            return fired == set(names)

        took_over = wait_for(
            every_row_fired_again, timeout=30, interval=0.5, message="every row fires again, sent by the other beat"
        )
        assert took_over
        other.wait_for_output("took over", timeout=5)
        # The other beat ticked about once a second while the rows were locked: a beat that
        # looked again at once would commit thousands of transactions in these seconds.
        waited = (utcnow() - stopped_at).total_seconds()
        commits = transactions_committed(sync_engine) - commits_before
        assert commits < 60 * waited, f"{commits} transactions in {waited:.1f} s"
    finally:
        os.kill(pid, signal.SIGCONT)
        assert other.stop() == 0, other.output()[-3000:]
        frozen.stop()


def heartbeat_pids(engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.execute(text("SELECT pid FROM beat_heartbeats")).scalars())


def transactions_committed(engine) -> int:
    """Commits in this database so far, as PostgreSQL's statistics have them."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_force_next_flush()"))
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            connection.execute(
                text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            ).scalar()
        )
