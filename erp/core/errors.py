"""Domain errors that services raise (the API turns each kind into one status code), and the
one way a failure becomes text (`error_text`, `error_message`)."""

from __future__ import annotations

import re

from erp.core.logging import redact


class NotFoundError(LookupError):
    """The thing asked for does not exist (404)."""


class ConflictError(Exception):
    """A clash with the current state: a name taken, a stale version (409)."""


class InvalidInputError(ValueError):
    """Input that passed the schema but breaks a rule, e.g. an unregistered task name (422)."""


# --- failures as text: what is stored, logged, shown or posted of an error -------------------

# The most characters of an error kept anywhere (the run ledger, a task's status, an import,
# an alert): enough for the class and a sentence, never a statement with its rows.
ERROR_TEXT_LIMIT = 500

# SQLAlchemy's wrapper starts its message with the DBAPI class ("(sqlalchemy.dialects.postgresql
# .asyncpg.Error) "), and its asyncpg adapter the driver's class ("<class 'asyncpg...'>: ").
_WRAPPER_PREFIXES = re.compile(r"^(?:\([\w.]+\)\s*)?(?:<class '[\w.]+'>:\s*)?")


def _driver_error(error: BaseException) -> BaseException | None:
    """The database driver's own exception inside a SQLAlchemy error (`orig`, and under the
    asyncpg adapter the asyncpg exception it was raised from), or None."""
    orig = getattr(error, "orig", None)
    if not isinstance(orig, BaseException):
        return None
    cause = orig.__cause__
    return cause if isinstance(cause, BaseException) and getattr(cause, "sqlstate", None) else orig


def error_message(error: BaseException, limit: int = ERROR_TEXT_LIMIT) -> str:
    """The first line of what the error (or the driver's error inside it) says, secrets
    masked, at most `limit` characters.

    Why the first line only: a SQLAlchemy error's text goes on with the statement (thousands
    of characters for a chunk of an import) and its parameters (customers' and products'
    names), and PostgreSQL's DETAIL line names the rows; the first line is the driver's
    sentence, "deadlock detected" or "duplicate key value violates unique constraint ...".
    """
    driver = _driver_error(error)
    text = str(driver if driver is not None else error).strip()
    first = _WRAPPER_PREFIXES.sub("", text.splitlines()[0].strip()) if text else ""
    return redact(first)[:limit]


def error_text(error: BaseException, limit: int = ERROR_TEXT_LIMIT) -> str:
    """`Class: first line` of an error (with the driver's class inside a SQLAlchemy error),
    bounded and sanitized: the one text of a failure that is stored, logged, shown in a
    task's status or posted in an alert."""
    driver = _driver_error(error)
    name = type(error).__name__
    if driver is not None and type(driver).__name__ != name:
        name = f"{name}: {type(driver).__name__}"
    message = error_message(error, limit)
    return (f"{name}: {message}" if message else name)[:limit]
