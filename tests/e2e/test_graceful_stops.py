"""SIGTERM as Heroku sends it (to every process of the dyno), with 30 s before SIGKILL.

- worker: a running task finishes, or, past the grace period, goes back to the queue; it is
  never lost and its work is never done twice (counted by the rows the task body writes);
- beat: a second beat goes on sending the rows' runs as soon as the first is told to stop;
- web: uvicorn answers the requests in flight before it exits.
"""

from __future__ import annotations

import shlex
import signal
import threading
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from tests.support import bridge_tasks
from tests.support.bridge_tasks import probe_values
from tests.support.processes import ManagedProcess, free_port, start_beat, start_worker
from tests.support.procfile import procfile_commands, start_procfile_process
from tests.support.scheduling import (
    QueueWatcher,
    add_interval_task,
    broker,
    empty_broker,
    queued_runs,
    utcnow,
    wait_for,
)

pytestmark = pytest.mark.e2e

HEROKU_GRACE_SECONDS = 30


@pytest.fixture
def probe_table(sync_engine, clean_tables):
    with sync_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {bridge_tasks.PROBE_TABLE}"))
        connection.execute(text(f"CREATE TABLE {bridge_tasks.PROBE_TABLE} (id serial PRIMARY KEY, value text)"))
    empty_broker()
    yield
    with sync_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {bridge_tasks.PROBE_TABLE}"))


def sigterm_like_heroku(process: ManagedProcess) -> float:
    """SIGTERM to every process of the group (the main process and its children); returns when it exited."""
    started = time.monotonic()
    process.stop(signal.SIGTERM, timeout=HEROKU_GRACE_SECONDS)
    return time.monotonic() - started


def wait_for_value(sync_engine, prefix: str, timeout: float = 20) -> str:
    return wait_for(
        lambda: next((v for v in probe_values(sync_engine) if v.startswith(prefix)), None),
        timeout=timeout,
        message=f"a row starting {prefix!r}",
    )


def nothing_left_in_redis() -> bool:
    client = broker()
    try:
        return client.llen("celery") == 0 and client.hlen("unacked") == 0
    finally:
        client.close()


def test_a_task_running_at_sigterm_finishes_once_and_is_not_delivered_again(
    migrated_database, probe_table, sync_engine
):
    worker = start_worker("--concurrency", "2", "-I", "tests.support.bridge_tasks", name="worker-sigterm")
    result = bridge_tasks.start_sleep_finish_task.delay("graceful", 3)
    started = wait_for_value(sync_engine, "graceful:started:")
    took = sigterm_like_heroku(worker)

    assert worker.process.returncode == 0, worker.output()[-3000:]
    assert took < HEROKU_GRACE_SECONDS
    assert probe_values(sync_engine) == [started, "graceful:done"], worker.output()[-3000:]
    assert result.get(timeout=5) == int(started.rsplit(":", 1)[1])
    assert nothing_left_in_redis()
    # A worker started afterwards finds nothing to run again.
    second = start_worker("--concurrency", "1", "-I", "tests.support.bridge_tasks", name="worker-after")
    time.sleep(2)
    assert second.stop() == 0
    assert probe_values(sync_engine) == [started, "graceful:done"]


def test_a_task_running_past_the_grace_period_goes_back_to_the_queue_and_runs_once(
    migrated_database, probe_table, sync_engine
):
    env = {"CELERY_WORKER_SHUTDOWN_GRACE_SECONDS": "2"}
    worker = start_worker("--concurrency", "1", "-I", "tests.support.bridge_tasks", name="worker-grace", env=env)
    result = bridge_tasks.attempt_then_work_task.delay("long", 15)
    first_attempt = wait_for_value(sync_engine, "long:attempt:")
    took = sigterm_like_heroku(worker)

    # Stopped at the end of the grace period, well before Heroku's SIGKILL.
    assert took < 10, worker.output()[-3000:]
    assert worker.process.returncode is not None and worker.process.returncode >= 0, worker.output()[-3000:]
    assert "go back to the queue" in worker.output()
    # Its transaction was rolled back; its message is back on the queue, not hidden in `unacked`.
    assert probe_values(sync_engine) == [first_attempt]
    client = broker()
    assert client.llen("celery") == 1 and client.hlen("unacked") == 0
    client.close()

    second = start_worker("--concurrency", "1", "-I", "tests.support.bridge_tasks", name="worker-second")
    final_pid = result.get(timeout=40)
    assert second.stop() == 0
    assert probe_values(sync_engine) == [first_attempt, f"long:attempt:{final_pid}", "long:done"]
    assert nothing_left_in_redis()


def test_beat_stopped_with_sigterm_hands_its_rows_to_a_second_beat_within_a_second(sync_engine, clean_tables):
    empty_broker()
    for number in range(40):
        add_interval_task(sync_engine, f"handover-{number:02d}", every=1)
    first = start_beat(name="beat-first")
    wait_for(lambda: queued_runs("handover-"), timeout=20, message="the first beat's runs")
    second = start_beat(name="beat-second")
    time.sleep(2)
    with QueueWatcher("handover-") as watcher:
        told_to_stop = utcnow()
        took = sigterm_like_heroku(first)
        time.sleep(4)
    runs = queued_runs("handover-")
    assert second.stop() == 0

    assert first.process.returncode == 0, first.output()[-3000:]
    assert took < 5, first.output()[-3000:]
    # Every row keeps firing every second after the first beat was told to stop ...
    after = [run for run in runs if run["scheduled_at"] > told_to_stop]
    for number in range(40):
        seconds = {
            run["scheduled_at"].replace(microsecond=0) for run in after if run["name"] == f"handover-{number:02d}"
        }
        assert len(seconds) >= 3, f"handover-{number:02d} fired only at {sorted(seconds)}"
    # ... each run sent once, within a second of its time.
    assert len({run["id"] for run in runs}) == len(runs)
    lateness = [watcher.first_seen[run["id"]] - run["scheduled_at"] for run in after if run["id"] in watcher.first_seen]
    assert lateness and max(lateness) < timedelta(seconds=1), max(lateness)


def test_web_answers_the_request_in_flight_when_told_to_stop(migrated_database):
    """The Procfile's web command, with a test app that has a slow route."""

    web_command = shlex.split(procfile_commands()["web"])
    grace = float(web_command[web_command.index("--timeout-graceful-shutdown") + 1])
    assert grace < HEROKU_GRACE_SECONDS
    port = free_port()
    web = start_procfile_process(
        "web",
        port=port,
        replace={"erp.api.app:create_app": "tests.support.slow_app:create_app", "0.0.0.0": "127.0.0.1"},
    )
    web.wait_for_output("Application startup complete", timeout=30)
    url = f"http://127.0.0.1:{port}"
    answers: list[httpx.Response] = []
    in_flight = threading.Thread(target=lambda: answers.append(httpx.get(f"{url}/test/slow?seconds=3", timeout=20)))
    in_flight.start()
    time.sleep(0.5)
    os_signal_time = time.monotonic()
    stopping = threading.Thread(target=sigterm_like_heroku, args=(web,))
    stopping.start()
    time.sleep(0.5)
    # Told to stop: no new connections ...
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health/live", timeout=2)
    in_flight.join()
    stopping.join()
    # ... but the request in flight got its answer, and the process then exited cleanly.
    assert [(r.status_code, r.json()) for r in answers] == [(200, {"slept": 3.0})]
    # sh may exit before uvicorn (it got the SIGTERM too): wait for uvicorn's own last lines.
    wait_for(lambda: "Finished server process" in web.output(), timeout=grace, message="uvicorn exiting")
    assert time.monotonic() - os_signal_time < grace
    assert "Application shutdown complete" in web.output()
