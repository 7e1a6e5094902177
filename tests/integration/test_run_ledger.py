"""The run ledger under faults, with real beat and worker processes: every occurrence is recorded,
none is lost, none is executed twice (counted by the task bodies themselves)."""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from erp.core.broker_wire import PERIODIC_NAME_HEADER, PERIODIC_SCHEDULED_AT_HEADER
from erp.core.celery_app import celery_app
from tests.support import bridge_tasks
from tests.support.processes import start_beat, start_worker
from tests.support.scheduling import (
    add_interval_task,
    beat_in_transaction,
    ledger_rows,
    update_task,
    utcnow,
    wait_for,
    wait_for_none_left,
)

FINISHED = {"succeeded", "failed", "revoked", "skipped"}


@pytest.fixture
def fresh(empty_scheduler, runs_table):
    """Empty tables and broker, and the table the test tasks count their runs in."""


@pytest.fixture
def worker(fresh):
    process = start_worker("--concurrency", "2", "-I", "tests.support.bridge_tasks", name="ledger-worker")
    yield process
    process.stop()


def executions(sync_engine, phase: str = "started") -> Counter:
    """How many times each message's task body ran, by its own rows."""
    with sync_engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT message_id FROM {bridge_tasks.RUNS_TABLE} WHERE phase = :phase"), {"phase": phase}
        ).scalars()
        return Counter(rows)


def all_finished(sync_engine, prefix: str) -> bool:
    rows = ledger_rows(sync_engine, prefix)
    return bool(rows) and all(row.state in FINISHED for row in rows)


def unfinished(sync_engine, prefix: str) -> int:
    return sum(row.state not in FINISHED for row in ledger_rows(sync_engine, prefix))


KILLS = 5


# Alone: it kills beats at random while 40 schedules fire every second, and its worker then
# drains the backlog; other tests' load stretches both.
@pytest.mark.serial
def test_two_beats_killed_at_random_lose_no_occurrence_and_run_none_twice(fresh, worker, sync_engine):
    names = [f"chaos-{number:02d}" for number in range(40)]
    for name in names:
        add_interval_task(sync_engine, name, every=1, task="tests.count_run")
    beats = [start_beat(name="beat-a"), start_beat(name="beat-b")]
    kills = {"anywhere": 0, "inside publishing": 0}
    random.seed(20261125)
    # At least 30 s of chaos and at least KILLS kills of each kind: how many fit in 30 s depends
    # on how fast beats start on the machine, so the loop counts kills, not only time.
    started = time.monotonic()
    try:
        while time.monotonic() - started < 30 or min(kills.values()) < KILLS:
            assert time.monotonic() - started < 150, f"too few kills in 150 s: {kills}"
            time.sleep(random.uniform(0.3, 1.5))
            index = random.randrange(2)
            victim = beats[index]
            if random.random() < 0.5:
                # Catch it inside a publishing transaction: the runs are locked, maybe already in
                # Redis, not yet marked sent. Killed there, another beat publishes them again.
                until = time.monotonic() + 2
                while not beat_in_transaction(sync_engine, victim.process.pid, "periodic_task_runs"):
                    if time.monotonic() > until:
                        break
                    time.sleep(0.002)
                else:
                    victim.stop(signal.SIGKILL)
                    kills["inside publishing"] += 1
                    beats[index] = start_beat(name=f"beat-{'ab'[index]}-again")
                continue
            victim.stop(signal.SIGKILL)
            kills["anywhere"] += 1
            beats[index] = start_beat(name=f"beat-{'ab'[index]}-again")
        for name in names:
            update_task(sync_engine, name, enabled=False)
        # The worker drains what the beats sent during the chaos, at the loaded machine's pace.
        wait_for_none_left(lambda: unfinished(sync_engine, "chaos-"), stall=60, message="every occurrence ran")
    finally:
        for beat in beats:
            beat.stop()
    rows = ledger_rows(sync_engine, "chaos-")
    ran = executions(sync_engine)
    assert len(rows) >= 1000, f"{len(rows)} occurrences"
    assert {row.state for row in rows} == {"succeeded"}, Counter(row.state for row in rows)
    assert [message for message, count in ran.items() if count > 1] == [], "no occurrence ran twice"
    assert set(ran) == {row.message_id for row in rows}, "every occurrence ran, and nothing else did"
    for name in names:
        slots = [row.scheduled_at for row in rows if row.periodic_task_name == name]
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots)), (name, "a gap")
    dropped = worker.output().count("dropped a duplicate")
    print(f"kills: {kills}; occurrences: {len(rows)}; duplicates dropped by the worker: {dropped}")


def test_a_worker_killed_mid_run_runs_the_occurrence_again_and_records_it_once(fresh, worker, sync_engine):
    add_interval_task(sync_engine, "slow", every=1, period="hours", task="tests.count_run", kwargs={"seconds": 3})
    beat = start_beat()
    try:
        first = wait_for(lambda: executions(sync_engine), timeout=20, message="the run started")
        message_id = next(iter(first))
        child = _pid_of_first_start(sync_engine, message_id)
        os.kill(child, signal.SIGKILL)  # mid-run: after its start was recorded, before its end
        wait_for(lambda: executions(sync_engine, "done").get(message_id), timeout=30, message="run again to its end")
        wait_for(lambda: all_finished(sync_engine, "slow"), timeout=10)
    finally:
        beat.stop()
    (row,) = ledger_rows(sync_engine, "slow")
    assert (row.state, row.attempts, row.message_id) == ("succeeded", 2, message_id)
    assert executions(sync_engine)[message_id] == 2 and executions(sync_engine, "done")[message_id] == 1


def test_a_duplicate_message_is_dropped_before_the_task_body(fresh, worker, sync_engine):
    add_interval_task(sync_engine, "once-a-day", every=1, period="days", task="tests.count_run")
    beat = start_beat()
    try:
        wait_for(lambda: all_finished(sync_engine, "once-a-day"), timeout=20, message="the first run")
    finally:
        beat.stop()
    (row,) = ledger_rows(sync_engine, "once-a-day")
    # The same message again, as a beat that died after publishing and before committing would
    # send it, or as anyone with access to Redis could.
    celery_app.send_task(
        "tests.count_run",
        task_id=row.message_id,
        headers={PERIODIC_NAME_HEADER: "once-a-day", PERIODIC_SCHEDULED_AT_HEADER: row.scheduled_at.isoformat()},
    )
    worker.wait_for_output("dropped a duplicate", timeout=20)
    assert executions(sync_engine)[row.message_id] == 1

    # ...and counted, for /metrics (erp.core.metrics, added up in the result backend's Redis).
    # The counter is added after the log line: wait for it, not for the hash (other counters are
    # there already).
    def dropped_counted() -> bool:
        figures = celery_app.backend.client.hgetall("erp:metrics:tasks")
        return any(b"erp_task_dropped_duplicates" in field and b"tests.count_run" in field for field in figures)

    assert wait_for(dropped_counted, timeout=10, message="the dropped duplicate counted")
    assert celery_app.AsyncResult(row.message_id).state == "SUCCESS", "the first run's result is kept"


def test_overlap_skip_and_buffer_one_with_a_real_beat(fresh, worker, sync_engine):
    """A run takes 2.5 s, its schedule fires every second: skip drops the overlapping ones,
    buffer_one holds one and sends it when the previous run finishes."""
    add_interval_task(
        sync_engine, "overlap-skip", every=1, task="tests.count_run", kwargs={"seconds": 2.5}, overlap_policy="skip"
    )
    add_interval_task(
        sync_engine,
        "overlap-buffer",
        every=1,
        task="tests.count_run",
        kwargs={"seconds": 2.5},
        overlap_policy="buffer_one",
    )
    beat = start_beat()
    try:
        time.sleep(8)
        for name in ("overlap-skip", "overlap-buffer"):
            update_task(sync_engine, name, enabled=False)
        wait_for(lambda: all_finished(sync_engine, "overlap-"), timeout=30, interval=0.5)
    finally:
        beat.stop()
    for name in ("overlap-skip", "overlap-buffer"):
        rows = ledger_rows(sync_engine, name)
        states = Counter((row.state, row.skip_reason) for row in rows)
        assert states[("skipped", "overlap")] >= 3, (name, states)
        ran = [row for row in rows if row.state == "succeeded"]
        # Never two at once: each run starts after the previous one finished.
        for earlier, later in itertools.pairwise(ran):
            assert later.started_at >= earlier.finished_at, (name, earlier, later)
    buffered = [row for row in ledger_rows(sync_engine, "overlap-buffer") if row.state == "succeeded"]
    skipped_only = [row for row in ledger_rows(sync_engine, "overlap-skip") if row.state == "succeeded"]
    # A held run starts as soon as its predecessor ends: buffer_one runs back to back.
    assert any(
        (later.started_at - earlier.finished_at) < timedelta(seconds=1)
        for earlier, later in itertools.pairwise(buffered)
    )
    assert len(buffered) >= len(skipped_only)


def test_pause_auto_pause_and_the_failure_alerts_with_a_real_beat(fresh, worker, sync_engine):
    add_interval_task(
        sync_engine, "paused", every=1, task="tests.count_run", paused_at=utcnow(), pause_note="maintenance"
    )
    add_interval_task(sync_engine, "failing", every=1, task="tests.always_fails", auto_pause_after_failures=3)
    beat = start_beat()
    try:
        wait_for(
            lambda: _task(sync_engine, "failing").paused_at is not None,
            timeout=30,
            message="auto-paused after 3 failures",
        )
        time.sleep(2)
    finally:
        beat.stop()
    paused = ledger_rows(sync_engine, "paused")
    assert paused and {(row.state, row.skip_reason) for row in paused} == {("skipped", "paused")}
    assert executions(sync_engine) and all(
        message not in {row.message_id for row in paused} for message in executions(sync_engine)
    )
    failing = _task(sync_engine, "failing")
    assert failing.paused_by == "auto-pause" and "3 failures in a row" in failing.pause_note
    assert "this task always fails" in failing.pause_note
    states = Counter(row.state for row in ledger_rows(sync_engine, "failing"))
    assert states["failed"] >= 3 and states["skipped"] >= 1, states
    with sync_engine.connect() as connection:
        alerts = connection.execute(text("SELECT kind, run_id FROM periodic_task_alerts")).all()
    kinds = Counter(kind for kind, _ in alerts)
    assert kinds["failure"] >= 3 and kinds["auto_pause"] == 1
    failed_runs = {row.id for row in ledger_rows(sync_engine, "failing") if row.state == "failed"}
    assert {run_id for kind, run_id in alerts if kind == "failure"} <= failed_runs, "each names its run"


def test_a_missed_start_deadline_is_flagged_and_alerted(fresh, sync_engine):
    """No worker runs: the occurrence never starts, and beat says so once its deadline passes."""
    add_interval_task(
        sync_engine, "deadline", every=1, period="hours", task="tests.count_run", start_deadline_seconds=2
    )
    beat = start_beat()
    try:
        wait_for(lambda: any(row.start_deadline_missed for row in ledger_rows(sync_engine, "deadline")), timeout=15)
    finally:
        beat.stop()
    with sync_engine.connect() as connection:
        alerts = connection.execute(text("SELECT kind, message FROM periodic_task_alerts")).all()
    assert [(kind, "did not start within 2 s" in message) for kind, message in alerts] == [
        ("start_deadline_missed", True)
    ]


def test_jittered_occurrences_are_sent_at_their_due_time(fresh, sync_engine):
    add_interval_task(sync_engine, "jittered", every=2, task="tests.count_run", jitter_seconds=2)
    beat = start_beat()
    try:
        wait_for(lambda: sum(row.state == "sent" for row in ledger_rows(sync_engine, "jittered")) >= 4, timeout=20)
    finally:
        beat.stop()
    sent = [row for row in ledger_rows(sync_engine, "jittered") if row.state == "sent"]
    offsets = {row.due_at - row.scheduled_at for row in sent}
    assert all(timedelta(0) <= offset < timedelta(seconds=2) for offset in offsets) and len(offsets) > 1
    assert all(row.sent_at >= row.due_at for row in sent), "not sent before its due time"
    assert all(row.sent_at - row.due_at < timedelta(seconds=1.5) for row in sent), "sent when due"


def _task(sync_engine, name: str):
    from tests.support.scheduling import get_task

    return get_task(sync_engine, name)


def _pid_of_first_start(sync_engine, message_id: str) -> int:
    with sync_engine.connect() as connection:
        return int(
            connection.execute(
                text(f"SELECT pid FROM {bridge_tasks.RUNS_TABLE} WHERE message_id = :id ORDER BY id LIMIT 1"),
                {"id": message_id},
            ).scalar_one()
        )
