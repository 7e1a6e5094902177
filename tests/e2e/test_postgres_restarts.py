"""PostgreSQL restarting under a worker and a beat: the run guard and the outcome writes wait
for it, a task right after a restart gets a live connection, beat resumes without duplicates.
Real processes on a PostgreSQL and a Redis of the test's own (tests/support/private_services),
which the test stops, starts and restarts."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from celery import Celery
from sqlalchemy import text

from erp.core.broker_wire import PERIODIC_NAME_HEADER as NAME_HEADER
from erp.core.broker_wire import PERIODIC_SCHEDULED_AT_HEADER as SCHEDULED_AT_HEADER
from tests.support.fault_tasks import CREATE_EXECUTIONS, EXECUTIONS_TABLE
from tests.support.private_services import private_stack
from tests.support.processes import start_beat, start_worker
from tests.support.scheduling import add_interval_task, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack():
    with private_stack("erp_postgres_restarts") as private:
        with private.engine.begin() as connection:
            connection.execute(text(CREATE_EXECUTIONS))
        yield private


@pytest.fixture(scope="module")
def worker(stack):
    process = start_worker("--concurrency", "1", "-I", "tests.support.fault_tasks", env=stack.env)
    yield process
    process.stop()


def a_periodic_run(stack, name: str, task: str, **kwargs) -> str:
    """A planned-and-sent occurrence in the ledger and its message in the queue, as beat sends it."""
    message_id = str(uuid.uuid4())
    scheduled_at = datetime.now(UTC)
    with stack.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO periodic_task_runs (periodic_task_id, periodic_task_name, task_name, scheduled_at, due_at,"
                " message_id, state, sent_at, publish_count)"
                " VALUES (1, :name, :task, :at, :at, :id, 'sent', :at, 1)"
            ),
            {"name": name, "task": task, "at": scheduled_at, "id": message_id},
        )
    publish(stack, task, message_id, name, scheduled_at, **kwargs)
    return message_id


def publish(stack, task: str, message_id: str, name: str, scheduled_at: datetime, **kwargs) -> None:
    app = Celery(broker=f"{stack.redis.url}/0", set_as_current=False)
    app.send_task(
        task,
        task_id=message_id,
        kwargs=kwargs,
        headers={NAME_HEADER: name, SCHEDULED_AT_HEADER: scheduled_at.isoformat()},
    )


def run_state(stack, message_id: str):
    with stack.engine.connect() as connection:
        return connection.execute(
            text("SELECT state, attempts, error_type FROM periodic_task_runs WHERE message_id = :id"),
            {"id": message_id},
        ).first()


def executions(stack, message_id: str) -> int:
    with stack.engine.connect() as connection:
        return int(
            connection.execute(
                text(f"SELECT count(*) FROM {EXECUTIONS_TABLE} WHERE message_id = :id"), {"id": message_id}
            ).scalar()
        )


def test_a_run_that_arrives_while_postgresql_is_down_waits_for_it_and_runs_once(stack, worker):
    message_id = str(uuid.uuid4())
    scheduled_at = datetime.now(UTC)
    with stack.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO periodic_task_runs (periodic_task_id, periodic_task_name, task_name, scheduled_at, due_at,"
                " message_id, state, sent_at, publish_count)"
                " VALUES (2, 'guard-waits', 'tests.count_execution', :at, :at, :id, 'sent', :at, 1)"
            ),
            {"at": scheduled_at, "id": message_id},
        )
    stack.engine.dispose()
    stack.postgres.stop()
    try:
        publish(stack, "tests.count_execution", message_id, "guard-waits", scheduled_at)
        time.sleep(5)  # the worker has the message: its guard cannot reach the ledger
    finally:
        stack.postgres.start()
    wait_for(lambda: run_state(stack, message_id).state == "succeeded", timeout=60, message="the run succeeded")
    assert executions(stack, message_id) == 1
    assert run_state(stack, message_id).attempts == 1


def test_the_outcome_of_a_run_is_recorded_once_postgresql_is_back(stack, worker):
    message_id = a_periodic_run(stack, "outcome-waits", "tests.echo", value="done", seconds=2)
    wait_for(lambda: run_state(stack, message_id).state == "started", timeout=20, message="the run started")
    stack.engine.dispose()
    stack.postgres.stop()
    try:
        worker.wait_for_output(f"the outcome of {message_id} waits for PostgreSQL", timeout=20)
        time.sleep(2)
    finally:
        stack.postgres.start()
    wait_for(lambda: run_state(stack, message_id).state == "succeeded", timeout=60, message="the outcome recorded")


def test_a_task_right_after_a_restart_gets_a_live_connection(stack, worker):
    app = Celery(broker=f"{stack.redis.url}/0", backend=f"{stack.redis.url}/1", set_as_current=False)
    first = app.send_task("tests.database_pid").get(timeout=30)
    stack.postgres.restart()  # ends every session, the one pooled in the worker's child included
    second = app.send_task("tests.database_pid").get(timeout=30)
    assert first != second
    assert "lost its PostgreSQL connection" not in worker.output(), "the pool knew the connection was closed"


def test_beat_survives_postgresql_restarts_without_duplicates(stack):
    # To a queue no worker consumes: what beat published stays there to be counted.
    add_interval_task(stack.engine, "through-restarts", every=1, task="tests.echo", kwargs={"value": 1}, queue="kept")
    beat = start_beat(env=stack.env)
    try:
        for _ in range(2):
            wait_for(lambda: sent(stack) >= 2, timeout=10, message="runs are sent")
            before = sent(stack)
            stack.postgres.restart()
            wait_for(lambda before=before: sent(stack) >= before + 3, timeout=40, message="runs resume")
        assert beat.process.poll() is None, "beat stayed up"
        assert "PostgreSQL is unavailable" in beat.output()
    finally:
        assert beat.stop() == 0, beat.output()[-3000:]
    client = stack.redis.client(0)
    ids = Counter(item.split(b'"id": "')[1].split(b'"')[0] for item in client.lrange("kept", 0, -1))
    client.close()
    assert ids and max(ids.values()) == 1, "no occurrence was published twice"


def sent(stack) -> int:
    with stack.engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM periodic_task_runs WHERE periodic_task_name = 'through-restarts'")
            ).scalar()
        )
