"""The probes anyone may ask (no token) say `up` or `down` and nothing more; the details (role
names, hosts, ports, beat instances) are logged for the operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from tests.support.processes import free_port, start_web
from tests.support.scheduling import wait_for


def test_ready_with_both_services_down_says_down_and_logs_why(migrated_database):
    redis_port = free_port()
    web, url = start_web(
        env={
            "DATABASE_URL": "postgresql://no_such_role_xq7@127.0.0.1:5432/erp_no_such_database",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        }
    )
    try:
        ready = httpx.get(f"{url}/health/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"postgresql": "down", "redis": "down"}}
        for detail in ("no_such_role_xq7", "erp_no_such_database", "127.0.0.1", "5432", str(redis_port)):
            assert detail not in ready.text
        wait_for(lambda: "health: redis is down" in web.output(), timeout=5)
        wait_for(lambda: "health: postgresql is down" in web.output(), timeout=5)
        assert str(redis_port) in web.output()
    finally:
        web.stop()


def test_beat_says_up_or_down_and_names_no_instance(api_client, clean_tables, sync_engine, caplog):
    instance = "beat-host-7f3a.internal:4242"
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO beat_heartbeats (instance, hostname, pid, started_at, last_tick_at, runs_sent)"
                " VALUES (:i, 'beat-host-7f3a.internal', 4242, :at, :at, 3)"
            ),
            {"i": instance, "at": datetime.now(UTC) - timedelta(hours=1)},
        )
    down = api_client.get("/health/beat")
    assert down.status_code == 503 and down.json() == {"status": "unavailable", "beat": "down"}
    assert "beat-host" not in down.text
    assert any(instance in record.getMessage() for record in caplog.records)
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE beat_heartbeats SET last_tick_at = now()"))
    up = api_client.get("/health/beat")
    assert up.status_code == 200 and up.json() == {"status": "ok", "beat": "up"} and "beat-host" not in up.text
