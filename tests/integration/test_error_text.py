"""What is kept of a real database failure: a deadlock PostgreSQL breaks between two
transactions of the product's own engine. Its text is the class and the driver's first line
(no statement, no parameters, no DETAIL naming rows), and it counts as transient (retried)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from erp.core.db import create_async_db_engine
from erp.core.errors import ERROR_TEXT_LIMIT, error_message, error_text
from erp.core.retries import is_transient

SECRET_NAME = "Customer Müller-Geheim"


async def deadlock() -> DBAPIError:
    engine = create_async_db_engine("erp-test-deadlock")
    try:
        async with engine.begin() as setup:
            await setup.execute(text("DROP TABLE IF EXISTS deadlock_probe"))
            await setup.execute(text("CREATE TABLE deadlock_probe (id int PRIMARY KEY, name text)"))
            await setup.execute(text("INSERT INTO deadlock_probe VALUES (1, 'a'), (2, 'b')"))
        first, second = await engine.connect(), await engine.connect()
        try:
            await first.begin()
            await second.begin()
            update = text("UPDATE deadlock_probe SET name = :name WHERE id = :id")
            await first.execute(update, {"id": 1, "name": SECRET_NAME})
            await second.execute(update, {"id": 2, "name": SECRET_NAME})
            outcomes = await asyncio.gather(
                first.execute(update, {"id": 2, "name": SECRET_NAME}),
                second.execute(update, {"id": 1, "name": SECRET_NAME}),
                return_exceptions=True,
            )
        finally:
            await first.close()
            await second.close()
        [error] = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert isinstance(error, DBAPIError), repr(error)
        return error
    finally:
        async with engine.begin() as cleanup:
            await cleanup.execute(text("DROP TABLE IF EXISTS deadlock_probe"))
        await engine.dispose()


@pytest.fixture
def deadlock_error(migrated_database) -> DBAPIError:
    return asyncio.run(deadlock())


def test_a_deadlock_is_transient_and_its_text_is_its_class_and_the_drivers_first_line(deadlock_error):
    assert SECRET_NAME not in str(deadlock_error), "every engine hides its statements' parameters"
    assert is_transient(deadlock_error), "SQLSTATE 40P01 is retried"
    assert error_message(deadlock_error) == "deadlock detected"
    assert error_text(deadlock_error) == "DBAPIError: DeadlockDetectedError: deadlock detected"
    assert len(error_text(deadlock_error)) <= ERROR_TEXT_LIMIT
