"""A worker through Redis restarts: it keeps consuming, it does not exit, and one that stops
consuming anyway exits so that the platform restarts it. Real workers on a Redis of the test's
own (tests/support/private_services), restarted empty as a Redis without persistence is."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery

from tests.support.private_services import PrivateRedis
from tests.support.processes import start_worker
from tests.support.scheduling import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def env_for(server: PrivateRedis, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": server.url, "REDIS_CELERY_BROKER_DB": "0", "REDIS_CELERY_RESULT_DB": "1", **extra}


def sender(server: PrivateRedis) -> Celery:
    """A bare client app publishing to the private Redis; no result backend, so that sending
    subscribes to nothing (what the worker did is read from its log)."""
    return Celery(broker=f"{server.url}/0", set_as_current=False)


def waiting(server: PrivateRedis) -> int:
    client = server.client(0)
    try:
        return int(client.llen("celery"))
    except redis.RedisError:
        return -1
    finally:
        client.close()


def test_a_worker_keeps_consuming_through_redis_restarts(private_redis):
    # As the Procfile runs it: mingle and gossip open channels of their own at each reconnect.
    worker = start_worker(
        "--concurrency", "2", "-I", "tests.support.fault_tasks", env=env_for(private_redis), mingle_and_gossip=True
    )
    try:
        for restart in range(5):
            private_redis.restart_empty(down_seconds=1.0)
            time.sleep(5)  # the worker reconnects; clients come back too
            app = sender(private_redis)
            for number in range(10):
                app.send_task("tests.echo", args=[f"round-{restart}-{number}"])
            wait_for(
                lambda: waiting(private_redis) == 0,
                timeout=20,
                message=f"the worker took every message after restart {restart + 1}",
            )
            for number in range(10):
                worker.wait_for_output(f"'round-{restart}-{number}'", timeout=20)
            assert worker.process.poll() is None, worker.output()[-3000:]
    finally:
        worker.stop()


def test_a_worker_running_tasks_through_redis_restarts_stays_up_and_finishes_them(private_redis):
    worker = start_worker("--concurrency", "2", "-I", "tests.support.fault_tasks", env=env_for(private_redis))
    try:
        for restart in range(3):
            app = sender(private_redis)
            for number in range(2):
                app.send_task("tests.echo", args=[f"long-{restart}-{number}"], kwargs={"seconds": 3})
            wait_for(
                lambda: worker.process.poll() is not None or waiting(private_redis) == 0,
                timeout=20,
                message="both tasks started",
            )
            assert worker.process.poll() is None, f"the worker exited:\n{worker.output()[-4000:]}"
            time.sleep(0.5)
            private_redis.restart_empty(down_seconds=1.0)
            for number in range(2):
                worker.wait_for_output(f"'long-{restart}-{number}'", timeout=20)
            assert worker.process.poll() is None, f"the worker exited:\n{worker.output()[-4000:]}"
        assert "Unrecoverable error" not in worker.output()
    finally:
        worker.stop()


def test_a_worker_that_stops_consuming_exits_so_that_the_platform_restarts_it(private_redis):
    env = env_for(private_redis, STALL_CONSUMER_AFTER="2", CELERY_WORKER_STALL_TIMEOUT_SECONDS="10")
    worker = start_worker(
        "--concurrency", "1", "-I", "tests.support.fault_tasks,tests.support.stalled_consumer", env=env
    )
    try:
        time.sleep(3)  # the consumer no longer takes messages
        app = sender(private_redis)
        for number in range(3):
            app.send_task("tests.echo", args=[number])
        started = time.monotonic()
        code = worker.process.wait(timeout=60)
        assert code == 70, worker.output()[-3000:]
        assert time.monotonic() - started >= 10, "not before the stall timeout"
        assert "stopped consuming" in worker.output() and "3 message(s) wait in celery" in worker.output()
    finally:
        worker.stop()
