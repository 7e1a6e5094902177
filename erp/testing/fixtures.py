"""The fixtures of erp's test kit (loaded by `pytest_plugins = ["erp.testing"]`).

Each fixture imports what it needs when it runs, so loading the plugin reads no setting, opens
no connection and loads neither the web app nor a feature.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from erp.testing.clock import ControllableClock

if TYPE_CHECKING:
    from celery import Celery
    from celery.worker import WorkController
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncSession


@pytest.fixture(scope="session")
def erp_database() -> str:
    """The database every fixture of the kit uses: the settings' `DATABASE_URL`, as it is.

    The kit does not migrate it. Override this fixture (same name, in your conftest.py) to
    create or migrate the database first; this repository's suite does.
    """
    from erp.core.config import get_settings

    return get_settings().sync_database_url


@pytest.fixture
def erp_eager(erp_database: str) -> Iterator[Celery]:
    """Eager mode for one test: a task queued in it (dispatched by an endpoint, `.delay()`ed,
    queued inside a service) runs at once, in this process, as `CELERY_TASK_ALWAYS_EAGER`
    would make it (erp.core.eager), and stores its result where the status endpoint reads it.

    Set on the Celery app rather than in the settings, so it ends with the test; the settings'
    refusal outside development guards deployments, not tests.
    """
    from erp.core.celery_app import celery_app

    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield celery_app
    finally:
        celery_app.conf.task_always_eager = previous


@pytest.fixture(scope="module")
def erp_worker(erp_database: str) -> Iterator[WorkController]:
    """A real Celery worker in a thread of this process (`celery.contrib.testing`), consuming
    the default queue of the settings' Redis: what eager mode leaves out (the message, the
    worker's hooks, retries with their countdown) happens as in production, minus prefork.

    Module-scoped, since starting one costs about a second. Not with `erp_eager` (nothing would
    reach it). Outside a fixture: `erp.testing.worker.in_process_worker()`.
    """
    from erp.testing.worker import in_process_worker

    with in_process_worker() as worker:
        yield worker


@pytest.fixture(scope="session")
def erp_app(erp_database: str) -> FastAPI:
    """The app `erp_api` serves: the product's (`erp.api.app.create_app`). Override it to
    include a router that erp/api/app.py does not include yet."""
    from erp.api.app import create_app

    return create_app()


@pytest.fixture(scope="session")
def erp_api(erp_app: FastAPI) -> Iterator[TestClient]:
    """`erp_app` over Starlette's TestClient: ASGI, no server, the app's lifespan run.

    One for the whole run: the app's pooled engine is bound to the event loop that opened its
    connections, and each TestClient runs the app on a loop of its own.
    """
    from fastapi.testclient import TestClient

    with TestClient(erp_app) as client:
        yield client


@dataclass(frozen=True)
class ApiUser:
    """A user made by `erp_make_user`, with the API token that authenticates it."""

    user_id: int
    organization_id: int | None
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakeUser = Callable[..., ApiUser]


@pytest.fixture(scope="session")
def erp_sync_engine(erp_database: str) -> Iterator[Engine]:
    """A synchronous engine on the kit's database, for a test's own setup and checks."""
    from erp.core.db import create_sync_engine

    engine = create_sync_engine("erp-test", pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def erp_make_user(erp_sync_engine: Engine) -> MakeUser:
    """Make a user with an API token: `erp_make_user(role="admin", organization="Acme")`.

    `role=None` makes a user outside any organization; an organization is found or created by
    name (by default one of its own per user). Committed: the API reads it on its own connections.
    """
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from erp.accounts.models import ApiTokenDB, MembershipDB, OrganizationDB, UserDB
    from erp.core import tokens

    numbers = itertools.count(1)

    def make(role: str | None = "member", superuser: bool = False, organization: str | None = None) -> ApiUser:
        number = next(numbers)
        secret = tokens.new_token()
        suffix = secret[-6:].lower()
        with Session(erp_sync_engine) as session, session.begin():
            user = UserDB(
                email=f"user{number}-{suffix}@example.com", full_name=f"User {number}", is_superuser=superuser
            )
            session.add(user)
            session.flush()
            organization_id = None
            if role is not None:
                name = organization or f"Organization of user {number} {secret[-6:]}"
                found = session.scalar(select(OrganizationDB).where(OrganizationDB.name == name))
                if found is None:
                    found = OrganizationDB(name=name)
                    session.add(found)
                    session.flush()
                session.add(MembershipDB(user_id=user.id, organization_id=found.id, role=role))
                organization_id = found.id
            session.add(
                ApiTokenDB(
                    user_id=user.id,
                    name="test",
                    prefix=tokens.display_prefix(secret),
                    token_hash=tokens.token_digest(secret),
                )
            )
            user_id = user.id
        return ApiUser(user_id=user_id, organization_id=organization_id, token=secret)

    return make


@pytest.fixture
async def erp_session(erp_database: str, anyio_backend: Any) -> AsyncIterator[AsyncSession]:
    """An `AsyncSession` whose work is rolled back after the test, commits included
    (erp.testing.database): call a service with it as a task would, `session=erp_session`.

    For async tests (`@pytest.mark.anyio`); the session lives on the test's event loop.
    """
    from erp.testing.database import rolled_back_session

    async with rolled_back_session() as session:
        yield session


@pytest.fixture
def erp_clock() -> Iterator[ControllableClock]:
    """The clock services read (`erp.core.clock.utcnow()`), standing still at the test's start
    (whole seconds, UTC) until the test moves it, in every thread of this process."""
    from erp.core.clock import time_source

    clock = ControllableClock(datetime.now(UTC).replace(microsecond=0))
    with time_source(clock.now):
        yield clock


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the bridge's loop and connections, if eager tasks or a worker in this process
    opened them (at the end of the run, not per test: starting them again costs)."""
    bridge = sys.modules.get("erp.core.bridge")
    if bridge is not None:
        bridge.shutdown_bridge()
