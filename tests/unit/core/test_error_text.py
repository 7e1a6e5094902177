"""The one text of a failure (pure logic): class and first line, bounded, secrets masked."""

from __future__ import annotations

from erp.core.errors import ERROR_TEXT_LIMIT, error_message, error_text


def test_only_the_first_line_is_kept_and_the_wrappers_prefixes_are_dropped():
    # How a SQLAlchemy error reads once the result backend has stored it (a task's status).
    stored = RuntimeError(
        "(sqlalchemy.dialects.postgresql.asyncpg.Error) <class 'asyncpg.exceptions.DeadlockDetectedError'>:"
        " deadlock detected\nDETAIL:  Key (order_number)=(SO-1) ...\n[SQL: WITH guard AS (...)]"
    )
    assert error_message(stored) == "deadlock detected"
    assert error_text(stored) == "RuntimeError: deadlock detected"


def test_the_text_is_bounded_and_masks_secrets():
    long = ValueError("x" * 10_000)
    assert len(error_text(long)) == ERROR_TEXT_LIMIT
    assert "s3cret" not in error_text(ConnectionError("redis://:s3cretpassword@cache:6379 refused"))
    assert error_text(KeyError()) == "KeyError"
