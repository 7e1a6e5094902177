"""The sync-to-async bridge in real workers, against the real PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from erp.core import bridge
from erp.features.ping.tasks import ping
from tests.support import bridge_tasks
from tests.support.bridge_tasks import probe_values


def test_in_process_worker_runs_ping_through_the_database(in_process_worker):
    result = ping.delay().get(timeout=20)
    assert result["pong"] is True
    assert result["database_time"]


def test_service_commits_on_success_and_rolls_back_on_error(in_process_worker, probe_table, sync_engine):
    assert bridge_tasks.insert_probe_task.delay("kept").get(timeout=20) == 1
    failed = bridge_tasks.insert_probe_task.delay("discarded", fail=True)
    with pytest.raises(ValueError, match="failing after inserting 'discarded'"):
        failed.get(timeout=20)
    assert probe_values(sync_engine) == ["kept"]


def test_the_bridge_called_from_plain_code_reuses_one_pooled_connection(migrated_database):
    pids = {bridge.run_service(bridge_tasks.backend_pid)[1] for _ in range(50)}
    assert len(pids) == 1
    bridge.shutdown_bridge()


def test_a_service_whose_connection_is_cut_before_its_commit_runs_again_in_a_new_session(
    migrated_database, probe_table, sync_engine, caplog
):
    """As when PostgreSQL restarts under a running task: the first attempt's connection is cut
    after it wrote (nothing committed), the service runs again and commits once."""
    calls: list[int] = []

    async def insert_then_lose_the_connection(*, session) -> int:
        calls.append(len(calls) + 1)
        await session.execute(text("INSERT INTO bridge_probe (value) VALUES ('once')"))
        if len(calls) == 1:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            with sync_engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await session.execute(text("SELECT 1"))  # the connection is gone
        return len(calls)

    try:
        with caplog.at_level("WARNING", logger="erp.core.bridge"):
            assert bridge.run_service(insert_then_lose_the_connection) == 2
    finally:
        bridge.shutdown_bridge()
    assert probe_values(sync_engine) == ["once"], "the first attempt's insert was rolled back"
    assert "lost its PostgreSQL connection before committing" in caplog.text
