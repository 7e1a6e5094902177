"""The task of the restart fault test; the worker under test loads it with `-I`.

Its body is what the test counts: each run it starts appends a line to a file (so the test
sees bodies that were cut off and run again), and each run that completes inserts a row in its
own session, which commits together with the run ledger's record of its success.
"""

from __future__ import annotations

import asyncio
import os
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app

EXECUTIONS_TABLE = "fault_test_executions"
CREATE_EXECUTIONS = (
    f"CREATE TABLE {EXECUTIONS_TABLE} (id bigserial PRIMARY KEY, message_id text NOT NULL, pid int NOT NULL)"
)


@celery_app.task(bind=True, name="tests.count_execution")
async def count_execution(self, *, session: AsyncSession) -> int:
    attempts_file = os.environ.get("FAULT_TEST_ATTEMPTS_FILE")
    if attempts_file:
        # One short append, before the body's database work: blocking the loop here is harmless.
        with open(attempts_file, "a") as attempts:  # noqa: ASYNC230
            attempts.write(f"{self.request.id}\n")
    await session.execute(
        text(f"INSERT INTO {EXECUTIONS_TABLE} (message_id, pid) VALUES (:message_id, :pid)"),
        {"message_id": self.request.id, "pid": os.getpid()},
    )
    await asyncio.sleep(float(os.environ.get("FAULT_TEST_BODY_SECONDS", "0.1")))
    return 1


@celery_app.task(name="tests.echo")
def echo(value: object, seconds: float = 0.0) -> object:
    """Returns its argument, after `seconds`: a task that needs neither PostgreSQL nor files."""
    time.sleep(seconds)
    return value


async def _backend_pid(*, session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@celery_app.task(name="tests.database_pid")
def database_pid() -> int:
    """A synchronous task whose service reads from PostgreSQL through the bridge."""
    return run_service(_backend_pid)
