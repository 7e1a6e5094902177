"""Test configuration: the suite's own database and Redis databases, set before erp is imported.

Unit tests need no services. Integration and end-to-end tests use the real PostgreSQL
(TEST_DATABASE_URL, default erp_test, dropped and migrated once per run) and the real Redis
(databases 10 and 11, flushed once per run).
"""

from __future__ import annotations

import os

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/erp_test")
TEST_ENV = {
    "ERP_ENV_FILE": "/nonexistent/.env",  # a developer's .env must not point the tests elsewhere
    "DATABASE_URL": TEST_DATABASE_URL,
    "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379"),
    "REDIS_CELERY_BROKER_DB": "10",
    "REDIS_CELERY_RESULT_DB": "11",
    "TIME_ZONE": "UTC",
    "LOG_LEVEL": "INFO",
}
for _name in ("REDIS_TLS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
    os.environ.pop(_name, None)
os.environ.update(TEST_ENV)

pytest_plugins = ["tests.fixtures"]
