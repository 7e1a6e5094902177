"""A parallel run (pytest-xdist) gives each worker a database and a Redis of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis
from sqlalchemy.engine import make_url

from erp.core.config import get_settings
from tests.support.environment import database_of_worker
from tests.support.fixtures import drop_database
from tests.support.processes import REPO_ROOT


def test_each_worker_has_a_database_and_a_private_redis_of_its_own(tmp_path, migrated_database):
    # The run's databases are named after this test's own, so that they are nobody else's (the
    # _gw0 of this run's own worker gw0 among them); its workers name themselves.
    base = make_url(migrated_database)
    probe_url = base.set(database=f"{base.database}_probe").render_as_string(hide_password=False)
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_XDIST_WORKER"}
    env.update(
        TEST_DATABASE_URL=probe_url,
        PARALLEL_PROBE_DIRECTORY=str(tmp_path),
        PYTHONPATH=str(REPO_ROOT),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "tests/support/parallel_probe.py"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        for worker in ("gw0", "gw1"):
            drop_database(database_of_worker(probe_url, worker))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    records = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]
    assert len(records) == 4
    by_worker: dict[str, list[dict]] = {}
    for record in records:
        by_worker.setdefault(record["worker"], []).append(record)
    assert set(by_worker) == {"gw0", "gw1"}, "both workers ran tests"
    for worker, seen in by_worker.items():
        assert {record["database"] for record in seen} == {f"{base.database}_probe_{worker}"}
        assert len({record["redis_pid"] for record in seen}) == 1
        # Each worker's Redis held its own tests' keys and no other worker's.
        assert max(len(record["keys"]) for record in seen) == len(seen)
    servers = {seen[0]["redis_port"] for seen in by_worker.values()}
    ours = redis.Redis.from_url(get_settings().broker_url).connection_pool.connection_kwargs["port"]
    assert len(servers) == 2 and ours not in servers, "a private Redis per worker, not this run's"
    for port in servers:
        gone = redis.Redis(port=port, socket_connect_timeout=0.5)
        try:
            gone.ping()
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError(f"the Redis on port {port} outlived its worker")
        finally:
            gone.close()
