"""The migrations build exactly what the models declare, and downgrade cleanly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from erp.core.config import get_settings
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


def test_tokens_without_an_expiry_get_the_default_lifetime_from_0006(sync_engine, clean_tables):
    """Before 0006 a token could have no expiry; after it, none lives for ever, and none stops
    working the moment the upgrade runs."""
    config = alembic_config()
    command.downgrade(config, "0005")
    try:
        with sync_engine.begin() as connection:
            user_id = connection.execute(
                text("INSERT INTO users (email) VALUES ('old@example.com') RETURNING id")
            ).scalar()
            connection.execute(
                text(
                    "INSERT INTO api_tokens (user_id, name, prefix, token_hash, expires_at) VALUES"
                    " (:user, 'forever', 'erp_a', 'a', NULL), (:user, 'dated', 'erp_b', 'b', '2030-01-01T00:00:00Z')"
                ),
                {"user": user_id},
            )
    finally:
        command.upgrade(config, "head")
    with sync_engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT name, expires_at - now() FROM api_tokens")).all())
        dated = connection.execute(text("SELECT expires_at FROM api_tokens WHERE name = 'dated'")).scalar()
    assert abs(rows["forever"] - timedelta(days=get_settings().API_TOKEN_DEFAULT_LIFETIME_DAYS)) < timedelta(minutes=1)
    assert dated == datetime(2030, 1, 1, tzinfo=UTC)
