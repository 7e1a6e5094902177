"""The migrations build exactly what the models declare, and downgrade cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from erp.models import Base
from tests.support.fixtures import alembic_config


def test_models_and_migrations_agree(sync_engine):
    with sync_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_downgrade_to_base_and_upgrade_again(sync_engine):
    config = alembic_config()
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    with sync_engine.connect() as connection:
        assert not compare_metadata(MigrationContext.configure(connection), Base.metadata)
