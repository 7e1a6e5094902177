"""Shared fixtures: the migrated test database, clean Redis, clean tables, in-process worker."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _recreate_database(sync_url: str) -> None:
    url = make_url(sync_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    server.dispose()


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
    """
    from celery.contrib.testing.worker import start_worker

    from erp.core.celery_app import celery_app

    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        yield worker


@pytest.fixture(scope="session")
def api_client(migrated_database, redis_clean):
    """The real app over Starlette's TestClient, one for the whole run.

    One client means one event loop, so the app's pooled async engine stays on the loop that
    opened its connections across tests.
    """
    from fastapi.testclient import TestClient

    from erp.api.app import create_app

    with TestClient(create_app()) as client:
        yield client


@dataclass(frozen=True)
class AuthUser:
    user_id: int
    organization_id: int | None
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(sync_engine):
    """Create a user with an API token: `make_user(role="admin", organization="Acme")`.

    role None makes a user outside any organization; organizations are found or created by name.
    """
    from sqlalchemy.orm import Session

    from erp.accounts.models import ApiTokenDB, MembershipDB, OrganizationDB, UserDB
    from erp.core import tokens

    numbers = itertools.count(1)

    def make(role: str | None = "member", superuser: bool = False, organization: str | None = None) -> AuthUser:
        number = next(numbers)
        secret = tokens.new_token()
        with Session(sync_engine) as session, session.begin():
            user = UserDB(
                email=f"user{number}-{secret[-6:].lower()}@example.com",
                full_name=f"User {number}",
                is_superuser=superuser,
            )
            session.add(user)
            session.flush()
            organization_id = None
            if role is not None:
                name = organization or f"Organization of user {number} {secret[-6:]}"
                org = session.scalar(select(OrganizationDB).where(OrganizationDB.name == name))
                if org is None:
                    org = OrganizationDB(name=name)
                    session.add(org)
                    session.flush()
                session.add(MembershipDB(user_id=user.id, organization_id=org.id, role=role))
                organization_id = org.id
            session.add(
                ApiTokenDB(
                    user_id=user.id,
                    name="test",
                    prefix=tokens.display_prefix(secret),
                    token_hash=tokens.token_digest(secret),
                )
            )
            user_id = user.id
        return AuthUser(user_id=user_id, organization_id=organization_id, token=secret)

    return make
