"""The suite's own database and Redis databases, never a developer's or the product's.

Unit tests need no services. Integration and end-to-end tests use the real PostgreSQL
(TEST_DATABASE_URL, default erp_test, dropped and migrated once per run) and the real Redis
(databases TEST_REDIS_BROKER_DB and TEST_REDIS_RESULT_DB, default 10 and 11, flushed once per
run). The processes the tests start (uvicorn, celery worker, celery beat) inherit the same.

Run in parallel (pytest-xdist, `-n`), each worker is a run of its own: its database is
TEST_DATABASE_URL's with the worker's name appended (erp_test_gw0, erp_test_gw1, ...), and its
Redis is a private redis-server of its own on a free port (tests/support/private_services.py),
started before its first test and stopped after its last. Workers therefore share no row, key,
queue or lock, and a test written for the serial suite needs nothing to run in parallel.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from tests.support.private_services import PrivateRedis

# pytest-xdist names each worker process in its environment ("gw0", "gw1", ...); empty when
# the suite runs in one process.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def database_of_worker(url: str, worker: str) -> str:
    if not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


TEST_DATABASE_URL = database_of_worker(
    os.environ.get("TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/erp_test"), XDIST_WORKER
)
TEST_ENV = {
    "ERP_ENV_FILE": "/nonexistent/.env",  # a developer's .env must not point the tests elsewhere
    "DATABASE_URL": TEST_DATABASE_URL,
    "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379"),
    "REDIS_CELERY_BROKER_DB": os.environ.get("TEST_REDIS_BROKER_DB", "10"),
    "REDIS_CELERY_RESULT_DB": os.environ.get("TEST_REDIS_RESULT_DB", "11"),
    "TIME_ZONE": "UTC",
    "LOG_LEVEL": "INFO",
    # Tests queue tasks far faster than a member would, and users' and organizations' ids
    # start again at 1 in every test (TRUNCATE ... RESTART IDENTITY), while the limits' state
    # lives in Redis: the limits are out of the way unless a test sets its own (test_quotas).
    "TASKS_PER_MINUTE_PER_USER": "1000000",
    "TASKS_PER_MINUTE_PER_ORGANIZATION": "1000000",
    "REPORT_MAX_RUNNING_PER_ORGANIZATION": "10000",
    "DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION": "10000",
}
# Settings that would win over the ones above if a developer's shell had them.
OVERRIDING = ("REDIS_TLS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


def use_test_environment() -> None:
    """Point this process (and the processes it starts) at the suite's services."""
    from erp.core.config import get_settings

    for name in OVERRIDING:
        os.environ.pop(name, None)
    os.environ.update(TEST_ENV)
    get_settings.cache_clear()


def start_worker_redis() -> PrivateRedis | None:
    """In an xdist worker, start its own Redis and point TEST_ENV at it (broker database 0,
    results 1); None in a serial run, which keeps TEST_REDIS_URL's databases.

    TEST_ENV is changed in place, before use_test_environment applies it: modules that
    imported it, to give a process they start the suite's settings, see the worker's Redis.
    """
    if not XDIST_WORKER:
        return None
    from tests.support.private_services import PrivateRedis

    server = PrivateRedis()
    server.start()
    TEST_ENV.update({"REDIS_URL": server.url, "REDIS_CELERY_BROKER_DB": "0", "REDIS_CELERY_RESULT_DB": "1"})
    return server
