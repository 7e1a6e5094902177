"""Test configuration: the suite's own services (tests/support/environment.py) and fixtures."""

from __future__ import annotations

import pytest

from tests.support.environment import start_worker_redis, use_test_environment
from tests.support.private_services import PrivateRedis

# The package's test kit (erp/testing), then the suite's own fixtures.
pytest_plugins = ["erp.testing", "tests.support.fixtures"]

WORKER_REDIS = pytest.StashKey[PrivateRedis | None]()


@pytest.fixture(scope="session")
def erp_database(migrated_database, redis_clean):
    """The kit's fixtures use the suite's database, migrated once per run, and its clean Redis."""
    return migrated_database


def pytest_configure(config: pytest.Config) -> None:
    # Before any test or fixture reads a setting; nothing in erp reads one at import.
    config.stash[WORKER_REDIS] = start_worker_redis()
    use_test_environment()


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(WORKER_REDIS, None)
    if server is not None:
        server.stop()
