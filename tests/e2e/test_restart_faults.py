"""Every occurrence runs once through the faults production has: Redis restarted empty,
PostgreSQL restarted, the worker killed, with two beats and schedules every second.

Real processes on a Redis and a PostgreSQL of the test's own (tests/support/private_services),
which it restarts. What is counted is what the task bodies did (tests/support/fault_tasks): a
row each completed run commits in its own session, and a line each started run appends to a
file; the ledger's final states are then held against those rows, one for one.
"""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.support.fault_tasks import CREATE_EXECUTIONS, EXECUTIONS_TABLE
from tests.support.private_services import private_stack
from tests.support.processes import start_beat, start_worker
from tests.support.scheduling import add_interval_task, utcnow, wait_for

pytestmark = pytest.mark.e2e

SCHEDULES = 8


@pytest.fixture
def stack():
    handle, attempts_path = tempfile.mkstemp(prefix="erp-fault-attempts-")
    os.close(handle)
    # Shorter than production's, so that the test sees each rule at work in its minute.
    settings = {
        "FAULT_TEST_ATTEMPTS_FILE": attempts_path,
        "RUN_LEDGER_RESEND_AFTER_SECONDS": "5",
        "WORKER_LOST_AFTER_SECONDS": "10",
        "CELERY_BEAT_STALL_TIMEOUT_SECONDS": "5",
    }
    try:
        with private_stack("erp_faults", **settings) as private:
            with private.engine.begin() as connection:
                connection.execute(text(CREATE_EXECUTIONS))
            yield private, attempts_path
    finally:
        os.unlink(attempts_path)


def start_fault_worker(env: dict, name: str):
    return start_worker("--concurrency", "2", "-I", "tests.support.fault_tasks", name=name, env=env)


def test_every_occurrence_runs_once_through_redis_and_postgresql_restarts_and_a_killed_worker(stack):
    private, attempts_file = stack
    postgres, private_redis, engine, env = private.postgres, private.redis, private.engine, private.env
    for number in range(SCHEDULES):
        add_interval_task(engine, f"every-second-{number}", every=1, task="tests.count_execution")
    beats = [start_beat(env=env, name="beat-a"), start_beat(env=env, name="beat-b")]
    workers = [start_fault_worker(env, "worker-1")]
    started = utcnow()

    def postgres_restart() -> None:
        postgres.restart()

    def redis_restart() -> None:
        private_redis.restart_empty(down_seconds=1.0)

    def worker_kill() -> None:
        workers[-1].stop(signal.SIGKILL)  # the whole worker, children included, as a lost host
        time.sleep(1)
        workers.append(start_fault_worker(env, f"worker-{len(workers) + 1}"))

    faults = [redis_restart, postgres_restart, worker_kill, redis_restart, postgres_restart, worker_kill]
    faults += [postgres_restart, redis_restart]
    try:
        for fault in faults:
            time.sleep(6)
            fault()
        time.sleep(6)
        window_end = utcnow()

        def settled() -> bool:
            with engine.connect() as connection:
                return not connection.execute(
                    text(
                        "SELECT count(*) FROM periodic_task_runs WHERE scheduled_at BETWEEN :start AND :end"
                        " AND periodic_task_name LIKE 'every-second-%' AND state NOT IN ('succeeded', 'failed', 'skipped', 'revoked')"
                    ),
                    {"start": started, "end": window_end},
                ).scalar()

        try:
            wait_for(settled, timeout=120, interval=1, message="every occurrence of the window finished")
        except AssertionError:
            with engine.connect() as connection:
                left = connection.execute(
                    text(
                        "SELECT periodic_task_name, scheduled_at, state, worker, attempts, publish_count, sent_at,"
                        " started_at FROM periodic_task_runs WHERE scheduled_at BETWEEN :start AND :end"
                        " AND periodic_task_name LIKE 'every-second-%' AND state NOT IN ('succeeded', 'failed', 'skipped', 'revoked') ORDER BY scheduled_at"
                    ),
                    {"start": started, "end": window_end},
                ).all()
                heartbeats = connection.execute(text("SELECT * FROM worker_heartbeats")).all()
            logs = "\n".join(f"--- {p.name}\n{p.output()[-6000:]}" for p in (*beats, *workers[-2:]))
            raise AssertionError(
                f"{len(left)} unfinished, e.g. {[tuple(row) for row in left[:8]]}\nheartbeats {heartbeats}\n{logs}"
            ) from None
        for process in (*beats, workers[-1]):
            assert process.process.poll() is None, f"{process.name} exited:\n{process.output()[-3000:]}"
    finally:
        for process in (*beats, *workers):
            process.stop()

    with engine.connect() as connection:
        runs = connection.execute(
            text(
                "SELECT message_id, periodic_task_name, scheduled_at, state, skip_reason, error_type, error_message,"
                " attempts, publish_count FROM periodic_task_runs WHERE scheduled_at BETWEEN :start AND :end"
                " ORDER BY periodic_task_name, scheduled_at"
            ),
            {"start": started, "end": window_end},
        ).all()
        executions = Counter(connection.execute(text(f"SELECT message_id FROM {EXECUTIONS_TABLE}")).scalars())
    with open(attempts_file) as lines:
        bodies_started = Counter(line.strip() for line in lines if line.strip())
    ledger = {run.message_id: run for run in runs}
    slots: dict[str, list] = {}
    runs = [run for run in runs if run.periodic_task_name.startswith("every-second-")]
    for run in runs:
        slots.setdefault(run.periodic_task_name, []).append(run.scheduled_at)
    gaps = {
        name: [(a.isoformat(), b.isoformat()) for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1)]
        for name, times in slots.items()
    }
    assert len(slots) == SCHEDULES and not any(gaps.values()), f"every slot of every schedule is in the ledger: {gaps}"
    expected = (window_end - started) // timedelta(seconds=1) * SCHEDULES
    assert len(ledger) >= 0.9 * expected, f"{len(ledger)} occurrences in the window, about {expected} expected"
    skipped = [run for run in runs if run.state == "skipped"]
    assert not skipped, f"no occurrence is skipped (none was later than the misfire grace): {skipped[:5]}"
    twice = {message_id: count for message_id, count in executions.items() if count > 1}
    assert not twice, f"ran more than once: {twice}"
    never = [run for run in runs if executions[run.message_id] == 0]
    assert not never, f"{len(never)} of {len(runs)} never ran: {[tuple(run) for run in never[:5]]}"
    mismatched = [run for run in runs if run.state != "succeeded"]
    assert not mismatched, f"ledger states not matching the executions: {[tuple(run) for run in mismatched[:5]]}"
    cut_off = sum(
        count - executions[message_id] for message_id, count in bodies_started.items() if message_id in ledger
    )
    resent = sum(1 for run in runs if run.publish_count > 1)
    print(
        f"{len(runs)} occurrences, each ran once; {cut_off} body(ies) cut off by a fault and run again;"
        f" {resent} published more than once; {sum(bodies_started.values())} bodies started"
    )
