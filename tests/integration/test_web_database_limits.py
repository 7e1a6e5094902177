"""The web's sessions carry their time limits, and authentication has a pool of its own."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from erp.core import db


def _server_settings(engine_factory) -> tuple[str, str, str]:
    async def read() -> tuple[str, str, str]:
        engine = engine_factory.__wrapped__()  # a fresh engine, on this test's own loop
        try:
            async with engine.connect() as connection:
                statement = await connection.scalar(text("SHOW statement_timeout"))
                idle = await connection.scalar(text("SHOW idle_in_transaction_session_timeout"))
                name = await connection.scalar(text("SELECT current_setting('application_name')"))
                return statement, idle, name
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_web_sessions_end_long_statements_and_idle_transactions(migrated_database, monkeypatch):
    monkeypatch.setenv("WEB_DATABASE_STATEMENT_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("WEB_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", "3")
    from erp.core.config import get_settings

    get_settings.cache_clear()
    try:
        assert _server_settings(db.web_engine) == ("7s", "3s", "erp-web")
        assert _server_settings(db.auth_engine) == ("7s", "3s", "erp-web-auth")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_defaults_are_30_and_10_seconds(migrated_database):
    assert _server_settings(db.web_engine)[:2] == ("30s", "10s")
