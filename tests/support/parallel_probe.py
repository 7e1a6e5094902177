"""Tests run by tests/integration/test_parallel_workers.py in a pytest-xdist run of their own:
each records, in the file PARALLEL_PROBE_DIRECTORY names, where its worker's settings point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis
from sqlalchemy import text


@pytest.mark.parametrize("number", range(4))
def test_records_its_workers_services(number, migrated_database, redis_clean, sync_engine):
    from erp.core.config import get_settings

    settings = get_settings()
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        # The worker's Redis is empty at first (redis_clean) and holds only this worker's keys.
        broker.rpush("parallel-probe", number)
        keys = sorted(int(value) for value in broker.lrange("parallel-probe", 0, -1))
        server = broker.info("server")
    finally:
        broker.close()
    with sync_engine.connect() as connection:
        database = connection.execute(text("SELECT current_database()")).scalar_one()
    record = {
        "worker": os.environ["PYTEST_XDIST_WORKER"],
        "database": database,
        "redis_port": server["tcp_port"],
        "redis_pid": server["process_id"],
        "keys": keys,
    }
    path = Path(os.environ["PARALLEL_PROBE_DIRECTORY"]) / f"{number}.json"
    path.write_text(json.dumps(record))
