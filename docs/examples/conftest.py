# docs/examples/conftest.py
"""Runs the example of docs/writing-a-feature.md as if it were erp/features/order_audits.

In the product the feature's files are in erp/features/order_audits/, its table comes from an
Alembic migration, its router is included by erp/api/app.py and the suite's conftest loads the
test kit. Here, outside the product, this file does those four things for the example.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import erp.features
from tests.support.environment import use_test_environment

# `erp.features.order_audits` is the order_audits package beside this file, so the example's
# imports are the product's, and the worker's task discovery finds its tasks module.
erp.features.__path__.append(str(Path(__file__).parent))

pytest_plugins = ["erp.testing"]


def pytest_configure(config: pytest.Config) -> None:
    use_test_environment()  # the suite's database and Redis databases, never a developer's


@pytest.fixture(scope="session")
def erp_database() -> Iterator[str]:
    """The suite's database (migrated by the suite), with the example's table, which a
    migration would add in the product."""
    from erp.core.config import get_settings
    from erp.core.db import create_sync_engine
    from erp.features.order_audits.models import OrderAuditDB

    engine = create_sync_engine("erp-example")
    OrderAuditDB.__table__.create(engine, checkfirst=True)
    yield get_settings().sync_database_url
    OrderAuditDB.__table__.drop(engine, checkfirst=True)
    engine.dispose()


@pytest.fixture(scope="session")
def erp_app(erp_database: str):
    """The product's app with the example's router, as erp/api/app.py would include it."""
    from erp.api.app import create_app
    from erp.features.order_audits import router

    app = create_app()
    app.include_router(router.router)
    return app
