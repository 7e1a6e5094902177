"""The SQL a service function sends, recorded as it runs: for EXPLAIN in the index tests
(tests/integration/test_search_indexes.py) and the index benchmark (scripts/benchmarks/indexes.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class RecordingSession:
    """A session that keeps each statement it is asked to run (then runs it)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.statements: list[Any] = []

    async def scalar(self, statement: Any) -> Any:
        self.statements.append(statement)
        return await self.session.scalar(statement)

    async def scalars(self, statement: Any) -> Any:
        self.statements.append(statement)
        return await self.session.scalars(statement)


def statements_of(call: Callable[[Any], Awaitable[Any]]) -> list[str]:
    """The SQL `call(session)` sends, its parameters written in (as EXPLAIN needs them)."""
    # Imported here: a benchmark sets its environment before anything reads the settings.
    from sqlalchemy.dialects import postgresql

    from erp.core.db import run_with_session

    async def action(session: Any) -> list[str]:
        recording = RecordingSession(session)
        await call(recording)
        dialect = postgresql.dialect(paramstyle="named")  # `%` as itself, not psycopg2's `%%`
        return [
            str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            for statement in recording.statements
        ]

    return run_with_session(action)
