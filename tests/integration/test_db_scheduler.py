"""The database scheduler in real `celery beat` processes, on the real PostgreSQL and Redis."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from erp.core.config import get_settings
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.scheduler_models import BeatHeartbeatDB, IntervalScheduleDB, PeriodicTaskDB
from tests.support.private_services import PrivateRedis
from tests.support.processes import start_beat
from tests.support.scheduling import (
    QueueWatcher,
    add_crontab_task,
    add_interval_task,
    find_task,
    get_task,
    kill_beat_between_transactions,
    ledger_rows,
    queued_runs,
    update_task,
    utcnow,
    wait_for,
)


@pytest.fixture
def beat(empty_scheduler):
    process = start_beat()
    yield process
    assert process.stop() == 0, process.output()


def assert_no_duplicates(runs: list[dict]) -> None:
    ids = Counter(run["id"] for run in runs)
    assert [run_id for run_id, count in ids.items() if count > 1] == []
    moments = Counter((run["name"], run["scheduled_at"]) for run in runs)
    assert [key for key, count in moments.items() if count > 1] == []


def test_a_new_schedule_produces_messages_with_derived_ids(beat, sync_engine):
    task_id = add_interval_task(sync_engine, "new-every-second", every=1, args=[1, "two"], kwargs={"three": 3})
    runs = wait_for(lambda: len(r := queued_runs("new-every-second")) >= 3 and r, timeout=8)
    assert_no_duplicates(runs)
    assert all(run["id"] == periodic_run_id(task_id, run["scheduled_at"]) for run in runs)
    assert (runs[0]["args"], runs[0]["kwargs"], runs[0]["task"]) == ([1, "two"], {"three": 3}, "erp.ping")
    gaps = {(later["scheduled_at"] - earlier["scheduled_at"]) for earlier, later in itertools.pairwise(runs)}
    assert gaps == {timedelta(seconds=1)}, "runs stay on the one-second grid"
    row = get_task(sync_engine, "new-every-second")
    assert row.total_run_count >= 3 and row.last_run_at is not None


def test_beat_does_not_subscribe_to_the_results_of_what_it_sends(beat, sync_engine):
    """Celery's Redis backend subscribes to every sent task's result unless told nobody will wait
    (celery#4261): a round trip per run, and the unsubscribe in AsyncResult.__del__ could swallow
    the SystemExit of beat's SIGTERM handler, leaving beat running until it was killed."""
    from erp.core.config import get_settings

    monitor_client = redis.Redis.from_url(get_settings().result_backend_url)
    subscribes: list[str] = []
    with monitor_client.monitor() as monitor:
        add_interval_task(sync_engine, "no-subscribe", every=1)
        # MONITOR shows every command the server runs, until beat has sent three runs.
        for command in monitor.listen():
            if command["command"].upper().startswith("SUBSCRIBE"):
                subscribes.append(command["command"])
            if len(queued_runs("no-subscribe")) >= 3:
                break
    monitor_client.close()
    run_ids = {run["id"] for run in queued_runs("no-subscribe")}
    assert [command for command in subscribes if any(run_id in command for run_id in run_ids)] == []


@pytest.mark.serial  # alone: a second's deadline on a beat in another process
def test_an_edit_changes_the_cadence_within_about_a_second(beat, sync_engine):
    add_interval_task(sync_engine, "edited", every=1, period="hours")
    wait_for(lambda: len(queued_runs("edited")) == 1, timeout=5, message="the first run")
    time.sleep(1.5)
    assert len(queued_runs("edited")) == 1, "hourly: no second run yet"
    # A plain-SQL edit of the schedule row: the trigger resets next_run_at and notifies beat.
    with sync_engine.begin() as connection:
        connection.execute(update(IntervalScheduleDB).values(every=1, period="seconds"))
    edited_at = time.monotonic()
    wait_for(lambda: len(queued_runs("edited")) >= 2, timeout=5, interval=0.01, message="a run at the new cadence")
    assert time.monotonic() - edited_at < 1.0


def test_disable_stops_enable_resumes_delete_removes(beat, sync_engine):
    add_interval_task(sync_engine, "toggled", every=1)
    wait_for(lambda: len(queued_runs("toggled")) >= 2, timeout=6)
    update_task(sync_engine, "toggled", enabled=False)
    time.sleep(0.3)
    count_when_disabled = len(queued_runs("toggled"))
    time.sleep(2.5)
    assert len(queued_runs("toggled")) == count_when_disabled
    update_task(sync_engine, "toggled", enabled=True)
    wait_for(lambda: len(queued_runs("toggled")) > count_when_disabled, timeout=2, message="resumed after enable")
    with sync_engine.begin() as connection:
        connection.execute(delete(PeriodicTaskDB).where(PeriodicTaskDB.name == "toggled"))
    time.sleep(0.3)
    count_when_deleted = len(queued_runs("toggled"))
    time.sleep(2.5)
    assert len(queued_runs("toggled")) == count_when_deleted
    assert_no_duplicates(queued_runs("toggled"))


def test_two_beats_send_no_duplicates(empty_scheduler, sync_engine):
    for number in range(100):
        add_interval_task(sync_engine, f"pair-{number:03d}", every=1)
    first, second = start_beat(name="beat-1"), start_beat(name="beat-2")
    try:
        wait_for(lambda: len(queued_runs("pair-")) >= 400, timeout=30, message="400 runs")
    finally:
        assert first.stop() == 0 and second.stop() == 0
    runs = queued_runs("pair-")
    assert len(runs) >= 400
    assert_no_duplicates(runs)
    ledger = ledger_rows(sync_engine, "pair-")
    assert sorted(run["id"] for run in runs) == sorted(row.message_id for row in ledger if row.state == "sent")
    with Session(sync_engine) as session:
        counted = session.scalar(
            select(func.sum(PeriodicTaskDB.total_run_count)).where(PeriodicTaskDB.name.startswith("pair-"))
        )
    # A beat stopped between planning and publishing leaves planned runs; they are counted too.
    assert counted == len(ledger), "every run is counted once"


def test_beat_killed_and_restarted_follows_the_misfire_policy_without_duplicates(empty_scheduler, sync_engine):
    grace, cap = 0.5, 3
    env = {"CELERY_BEAT_MISFIRE_GRACE_SECONDS": str(grace), "CELERY_BEAT_MAX_CATCH_UP_RUNS": str(cap)}
    for policy in ("run_once", "skip", "run_all"):
        add_interval_task(sync_engine, f"misfire-{policy}", every=1, misfire_policy=policy)
    with QueueWatcher("misfire-") as watcher:
        process = first = start_beat(env=env)
        wait_for(lambda: all(queued_runs(f"misfire-{p}") for p in ("run_once", "skip", "run_all")), timeout=6)
        # Killed between transactions: a kill between publishing and committing sends a batch
        # twice (dropped by the worker's guard), which is not what this test is about.
        kill_beat_between_transactions(sync_engine, process)
        killed_at = utcnow()
        time.sleep(5)  # about five runs of each task are missed
        restarted_at = utcnow()
        process = start_beat(env=env, name="beat-restarted")
        try:
            time.sleep(3)
        finally:
            assert process.stop() == 0
    runs = queued_runs("misfire-")
    try:
        assert_no_duplicates(runs)
    except AssertionError as error:
        logs = f"first beat:\n{first.output()[-6000:]}\nrestarted beat:\n{process.output()[-6000:]}"
        raise AssertionError(f"{error}\n{logs}") from None
    # When the restarted beat sent its first message: catch-up runs were scheduled before it.
    resumed_at = min(seen for seen in watcher.first_seen.values() if seen > restarted_at)

    # The moment the restarted beat planned its catch-up comes before `resumed_at`, by the time
    # the message took to be seen: a run falling due in between is on time, not caught up. The
    # first tick plans every task at one moment, so the latest missed time it catches up to is
    # run_all's cap-th run after the kill, for all three tasks.
    run_all_after_kill = sorted(
        run["scheduled_at"] for run in runs if run["name"] == "misfire-run_all" and run["scheduled_at"] > killed_at
    )
    planned_up_to = run_all_after_kill[cap - 1]

    def caught_up(policy: str, until) -> list[dict]:
        return [run for run in runs if run["name"] == f"misfire-{policy}" and killed_at < run["scheduled_at"] <= until]

    # skip: the runs missed while no beat ran are recorded as skipped (misfire); what went out
    # was within the grace when beat planned it (planned_at: the moment it judged). A message's
    # arrival is no measure of that: it comes later by however long the first tick took.
    skip_rows = [row for row in ledger_rows(sync_engine, "misfire-skip") if row.scheduled_at > killed_at]
    skipped = [row.scheduled_at for row in skip_rows if row.state == "skipped"]
    sent = [row for row in skip_rows if row.state != "skipped"]
    assert skipped and {row.skip_reason for row in skip_rows if row.state == "skipped"} == {"misfire"}
    late = [row for row in sent if (row.planned_at - row.scheduled_at).total_seconds() > grace]
    assert sent and late == [], "skip sends no missed run"
    assert min(row.scheduled_at for row in sent) > max(skipped)
    assert len(caught_up("run_once", planned_up_to)) == 1, "run_once sends one run for all it missed"
    assert len(caught_up("run_all", planned_up_to)) == cap, "run_all sends the missed runs, up to the cap"
    # ...the latest `cap` of them: earlier missed times were dropped, these are one second apart.
    assert run_all_after_kill[0] - killed_at > timedelta(seconds=1)
    assert planned_up_to - run_all_after_kill[0] == timedelta(seconds=cap - 1)
    # After catching up, every task is back on its one-second grid.
    for policy in ("run_once", "skip", "run_all"):
        later = [
            run["scheduled_at"]
            for run in runs
            if run["name"] == f"misfire-{policy}" and run["scheduled_at"] > resumed_at
        ]
        assert later and all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(later))


def test_a_broken_row_is_disabled_with_a_reason_and_others_continue(beat, sync_engine):
    add_interval_task(sync_engine, "healthy", every=1)
    add_interval_task(sync_engine, "broken", every=1)
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE periodic_tasks SET args = '{\"not\": \"a list\"}' WHERE name = 'broken'"))
    wait_for(lambda: not get_task(sync_engine, "broken").enabled, timeout=5, message="broken row disabled")
    assert "args must be a JSON array" in get_task(sync_engine, "broken").disabled_reason
    count = len(queued_runs("healthy"))
    wait_for(lambda: len(queued_runs("healthy")) >= count + 2, timeout=5, message="healthy task keeps running")


def test_crontab_rows_get_their_next_run_computed_in_their_zone(beat, sync_engine):
    add_crontab_task(sync_engine, "nightly-berlin", minute="30", hour="2", timezone="Europe/Berlin")
    row = wait_for(lambda: (r := get_task(sync_engine, "nightly-berlin")).next_run_at and r, timeout=5)
    local = row.next_run_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (2, 30) and row.next_run_at > utcnow()


def test_config_entries_are_mirrored_and_an_admin_choice_survives_restart(empty_scheduler, sync_engine):
    add_interval_task(sync_engine, "no-longer-configured", every=60, from_config=True)
    process = start_beat()
    try:
        wait_for(lambda: (row := find_task(sync_engine, "erp.health_check")) and row.next_run_at, timeout=10)
    finally:
        process.stop()
    row = get_task(sync_engine, "erp.health_check")
    assert row.from_config and row.enabled and row.task == "erp.health_check"
    with Session(sync_engine) as session:
        assert session.scalar(select(PeriodicTaskDB).where(PeriodicTaskDB.name == "no-longer-configured")) is None
    update_task(sync_engine, "erp.health_check", enabled=False)
    process = start_beat(name="beat-again")
    try:
        time.sleep(1.5)
    finally:
        process.stop()
    assert get_task(sync_engine, "erp.health_check").enabled is False


def test_beat_records_a_heartbeat(beat, sync_engine):
    def heartbeat():
        with Session(sync_engine) as session:
            return session.scalars(select(BeatHeartbeatDB)).first()

    row = wait_for(heartbeat, timeout=5)
    assert abs((utcnow() - row.last_tick_at).total_seconds()) < 10


def ledger_states(sync_engine, name: str) -> dict[str, int]:
    with sync_engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM periodic_task_runs WHERE periodic_task_name = :name GROUP BY state"),
            {"name": name},
        ).all()
    return {state: count for state, count in rows}


def test_while_redis_is_down_runs_wait_in_the_ledger_and_all_go_out_when_it_is_back(empty_scheduler, sync_engine):
    private_redis = PrivateRedis()
    private_redis.start()
    add_interval_task(sync_engine, "needs-redis", every=1)
    process = start_beat(env={"REDIS_URL": private_redis.url})
    try:
        wait_for(lambda: ledger_states(sync_engine, "needs-redis").get("sent", 0) >= 2, timeout=6)
        private_redis.kill()
        time.sleep(1.5)  # let a tick in flight finish
        sent_before = ledger_states(sync_engine, "needs-redis").get("sent", 0)
        time.sleep(3)
        states = ledger_states(sync_engine, "needs-redis")
        assert states.get("sent", 0) == sent_before, "nothing is marked sent while Redis is away"
        assert states.get("planned", 0) >= 2, "the runs of the outage wait in the ledger"
        assert "Redis is unavailable" in process.output()
        private_redis.start()
        wait_for(
            lambda: ledger_states(sync_engine, "needs-redis").get("planned", 0) == 0,
            timeout=40,
            message="the waiting runs go out when Redis is back",
        )
        assert process.process.poll() is None
        # Every run the ledger says was sent is in the (new, empty) Redis but those of before.
        back = private_redis.client(get_settings().REDIS_CELERY_BROKER_DB)
        queued = back.llen("celery")
        back.close()
        assert queued >= ledger_states(sync_engine, "needs-redis")["sent"] - sent_before
    finally:
        process.stop()
        private_redis.stop()
