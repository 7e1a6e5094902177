"""Shared fixtures: the migrated test database, clean Redis, clean tables, in-process worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _on_server(sync_url: str, *statements: str) -> None:
    """Run `statements` (formatted with the URL's `database`) on its server, outside it."""
    url = make_url(sync_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        for statement in statements:
            connection.execute(text(statement.format(database=url.database)))
    server.dispose()


def _recreate_database(sync_url: str) -> None:
    _on_server(sync_url, 'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', 'CREATE DATABASE "{database}"')


def drop_database(sync_url: str) -> None:
    _on_server(sync_url, 'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def alembic_config() -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    return config


@pytest.fixture(scope="session", autouse=True)
def stop_leftover_processes():
    """Whatever a failed test left running is stopped when the run ends."""
    yield
    from tests.support.processes import ManagedProcess

    for process in ManagedProcess.started:
        process.stop(timeout=5)


@pytest.fixture(scope="session")
def migrated_database() -> str:
    """The test database, dropped, created and migrated to head once per run."""
    from erp.core.config import get_settings

    _recreate_database(get_settings().sync_database_url)
    command.upgrade(alembic_config(), "head")
    return get_settings().sync_database_url


@pytest.fixture(scope="session")
def sync_engine(migrated_database):
    engine = create_engine(migrated_database, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_clean():
    """Flush the suite's broker and result databases once per run."""
    from erp.core.config import get_settings

    for url in (get_settings().broker_url, get_settings().result_backend_url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


@pytest.fixture
def clean_tables(sync_engine):
    """Empty every application table before a test (the schema stays)."""
    from erp.models import Base

    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    # Processes a module keeps running (beat, a worker) read these tables meanwhile; TRUNCATE
    # takes its locks table by table and may deadlock with one of their transactions, which
    # PostgreSQL resolves by failing one side: then it is simply tried again.
    for attempt in range(5):
        try:
            with sync_engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            break
        except DBAPIError as error:
            if "deadlock detected" not in str(error) or attempt == 4:
                raise
    yield


@pytest.fixture(scope="module")
def in_process_worker(migrated_database, redis_clean):
    """A real Celery worker in a thread of this process, on the real Redis and PostgreSQL.

    Module-scoped: it consumes the default queue, which the scheduler tests read themselves.
    The kit's (erp.testing.worker), which gives each worker an event loop of its own.
    """
    from erp.testing.worker import in_process_worker

    with in_process_worker() as worker:
        yield worker


@pytest.fixture(scope="session")
def api_client(erp_api):
    """The real app over Starlette's TestClient, one for the whole run: the kit's (erp.testing).

    One client means one event loop, so the app's pooled async engine stays on the loop that
    opened its connections across tests.
    """
    return erp_api


@pytest.fixture
def make_user(erp_make_user):
    """Create a user with an API token: `make_user(role="admin", organization="Acme")` (the kit's).

    role None makes a user outside any organization; organizations are found or created by name.
    """
    return erp_make_user


@pytest.fixture
def limits(monkeypatch):
    """Set limits for one test: `limits(TASKS_PER_MINUTE_PER_USER=5)` (settings read again)."""
    from erp.core.config import get_settings

    def set_limits(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()

    yield set_limits
    monkeypatch.undo()
    get_settings.cache_clear()
