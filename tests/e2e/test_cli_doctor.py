"""`python -m erp doctor` and `schedules run --wait` against a real prefork worker and a real
beat, as the Procfile starts them: every check passes once both are up, and a run sent from the
command line comes back with its result."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import erp
from tests.support.processes import start_beat, start_worker
from tests.support.scheduling import empty_broker, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def worker_and_beat(migrated_database, redis_clean):
    empty_broker()
    worker = start_worker("--concurrency", "1")
    beat = start_beat()
    yield
    for process in (beat, worker):
        process.stop()


def test_doctor_passes_every_check_once_beat_and_a_worker_run(worker_and_beat, clean_tables):
    def healthy():
        done = erp("doctor", "--json")
        return done if done.returncode == 0 else None

    # A worker's first heartbeat comes within HEARTBEAT_EVERY_SECONDS, beat's with its first tick.
    done = wait_for(healthy, timeout=60, interval=1, message="doctor exits 0")
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert {check["name"]: check["status"] for check in report["checks"]} == dict.fromkeys(
        ("settings", "postgresql", "migrations", "redis", "beat", "workers", "queues"), "ok"
    )
    workers = next(check for check in report["checks"] if check["name"] == "workers")
    assert workers["detail"].startswith("1 answering: ")


def test_a_run_sent_from_the_command_line_comes_back_with_its_result(worker_and_beat, clean_tables):
    made = erp("schedules", "create", "--name", "ping hourly", "--task", "erp.ping", "--crontab", "0 * * * *")
    assert made.returncode == 0, made.stderr
    done = erp("schedules", "run", "ping hourly", "--wait", "--timeout", "60", "--json", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert status["state"] == "SUCCESS" and status["periodic_task_name"] == "ping hourly"

    def ledger():
        runs = json.loads(erp("runs", "list", "--schedule", "ping hourly", "--json").stdout)["items"]
        return [(run["origin"], run["state"]) for run in runs]

    # The worker records the outcome in the ledger as the task ends, about when its result is stored.
    wait_for(lambda: ledger() == [("manual", "succeeded")], timeout=20, interval=0.5, message="the run succeeded")
