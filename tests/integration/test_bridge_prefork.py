"""The bridge in a real prefork worker process: many tasks per child, soft time limits."""

from __future__ import annotations

import os
import signal
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import text

from erp.core import bridge
from tests.support import bridge_tasks
from tests.support.bridge_tasks import probe_values
from tests.support.processes import start_worker


def worker_connections(sync_engine) -> int:
    with sync_engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'erp-worker' AND datname = current_database()"
            )
        ).scalar_one()


@pytest.fixture
def prefork_worker(migrated_database, redis_clean):
    worker = start_worker("--concurrency", "1", "-I", "tests.support.bridge_tasks", name="prefork-worker")
    yield worker
    assert worker.stop() == 0, worker.output()


def test_prefork_child_runs_500_bridge_tasks_on_bounded_connections(prefork_worker, sync_engine):
    results = [bridge_tasks.backend_pid_task.delay() for _ in range(500)]
    pairs = [result.get(timeout=60) for result in results]
    child_pids = {worker_pid for worker_pid, _ in pairs}
    backend_pids = {backend for _, backend in pairs}
    assert len(child_pids) == 1, "all tasks ran in one prefork child"
    assert len(backend_pids) <= bridge.POOL_SIZE + bridge.MAX_OVERFLOW
    assert worker_connections(sync_engine) <= bridge.POOL_SIZE + bridge.MAX_OVERFLOW
    assert "attached to a different loop" not in prefork_worker.output()


def test_soft_time_limit_cancels_the_coroutine_and_its_query(prefork_worker, sync_engine):
    started = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        bridge_tasks.sleep_in_database_task.delay(20).get(timeout=30)
    assert time.monotonic() - started < 10
    # The cancelled coroutine cancelled its query: PostgreSQL is not still sleeping for it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sync_engine.connect() as connection:
            sleeping = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active' AND datname = current_database()"
                )
            ).scalar_one()
        if sleeping == 0:
            break
        time.sleep(0.2)
    assert sleeping == 0
    # The same child keeps working afterwards.
    assert bridge_tasks.backend_pid_task.delay().get(timeout=20)


def test_a_task_whose_worker_child_is_killed_runs_again_to_completion(prefork_worker, probe_table, sync_engine):
    result = bridge_tasks.start_sleep_finish_task.delay("killed", 3)
    deadline = time.monotonic() + 20
    while not (started := [v for v in probe_values(sync_engine) if v.startswith("killed:started:")]):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    first_child = int(started[0].rsplit(":", 1)[1])
    os.kill(first_child, signal.SIGKILL)  # mid-task: after its start was recorded, before its end
    # Late acks with reject-on-worker-lost: the message goes back to the queue and runs again.
    final_child = result.get(timeout=30)
    assert final_child != first_child
    values = probe_values(sync_engine)
    assert values == [f"killed:started:{first_child}", f"killed:started:{final_child}", "killed:done"]


def test_a_soft_time_limit_during_blocking_work_rolls_the_work_back(prefork_worker, probe_table, sync_engine):
    """The limit fires while the service blocks the loop; the service then returns normally, and
    its session must not commit: the task gave up, so its work is rolled back."""
    with pytest.raises(SoftTimeLimitExceeded):
        bridge_tasks.insert_then_block_task.delay("abandoned", 3).get(timeout=30)
    time.sleep(3)  # past the end of the blocking call, when a commit would have happened
    assert probe_values(sync_engine) == []
    assert bridge_tasks.backend_pid_task.delay().get(timeout=20), "the child keeps working"


def test_nested_run_service_is_refused_at_once_with_a_clear_error(prefork_worker):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="run_service cannot be nested"):
        bridge_tasks.nested_service_task.delay(2).get(timeout=60)
    assert time.monotonic() - started < 10, "refused at once, not after the pool's 30 s timeout"
    assert bridge_tasks.backend_pid_task.delay().get(timeout=20)


def test_a_pool_child_starts_with_what_it_inherits_frozen_out_of_the_collector(prefork_worker):
    """gc.freeze() before each fork: the child's full collections walk only what it made."""
    state = bridge_tasks.garbage_collector_state.delay().get(timeout=30)
    assert state["frozen"] > 50_000, state
    assert state["tracked"] < state["frozen"] / 2, state
