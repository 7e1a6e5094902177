"""Fixtures shared by several integration modules."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import text

from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from erp.tasks.db_scheduler import DatabaseScheduler
from tests.support import bridge_tasks
from tests.support.scheduling import empty_broker


@pytest.fixture
def client(api_client):
    """The suite's client with no console cookie before or after (it is shared by the run):
    the console's tests sign in with it."""
    api_client.cookies.clear()
    yield api_client
    api_client.cookies.clear()


@pytest.fixture
def probe_table(sync_engine):
    """The table the bridge test tasks write to, fresh for each test."""
    with sync_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {bridge_tasks.PROBE_TABLE}"))
        connection.execute(text(f"CREATE TABLE {bridge_tasks.PROBE_TABLE} (id serial PRIMARY KEY, value text)"))
    yield
    with sync_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {bridge_tasks.PROBE_TABLE}"))


@pytest.fixture
def runs_table(sync_engine):
    """The table the ledger test tasks write one row per execution to, fresh for each test."""
    with sync_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {bridge_tasks.RUNS_TABLE}"))
        connection.execute(
            text(
                f"CREATE TABLE {bridge_tasks.RUNS_TABLE} (id serial PRIMARY KEY, message_id text, phase text, pid int)"
            )
        )
    yield
    with sync_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {bridge_tasks.RUNS_TABLE}"))


@pytest.fixture
def empty_scheduler(clean_tables, redis_clean):
    """Empty tables and an empty broker: nothing scheduled, nothing queued.

    Emptied again after the test: what it queued (thousands of runs, for a herd) would
    otherwise wait for the next test's worker, which runs the same process's tests in any order
    under pytest-xdist.
    """
    empty_broker()
    yield
    empty_broker()


@pytest.fixture
def scheduler(empty_scheduler):
    """A DatabaseScheduler in this process, whose steps a test calls with its own `now`."""
    instance = DatabaseScheduler(app=celery_app)
    yield instance
    instance.close()


@pytest.fixture
def broker_client(redis_clean):
    """A client of the broker's Redis database, emptied before and after the test."""
    empty_broker()
    client = redis.Redis.from_url(get_settings().broker_url)
    yield client
    empty_broker()
    client.close()
