"""Token lineage and lifetimes, and the account log.

Every token gets an expiry: one that had none expires API_TOKEN_DEFAULT_LIFETIME_DAYS after
this upgrade (read from the settings, as the service would give a new token), so no token
lives for ever and none stops working the moment the upgrade runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from erp.core.config import get_settings

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCOUNT_ACTIONS = (
    "organization.create",
    "user.create",
    "user.update",
    "user.deactivate",
    "user.activate",
    "membership.add",
    "membership.remove",
    "token.create",
    "token.revoke",
)


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("parent_token_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_api_tokens_parent_token_id_api_tokens"),
        "api_tokens",
        "api_tokens",
        ["parent_token_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(op.f("ix_api_tokens_parent_token_id"), "api_tokens", ["parent_token_id"], unique=False)
    op.execute(
        sa.text(
            "UPDATE api_tokens SET expires_at = now() + make_interval(days => :days) WHERE expires_at IS NULL"
        ).bindparams(days=get_settings().API_TOKEN_DEFAULT_LIFETIME_DAYS)
    )
    op.alter_column("api_tokens", "expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_table(
        "account_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor_user_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_email", sa.String(length=320), nullable=True),
        sa.Column("subject_user_id", sa.BigInteger(), nullable=True),
        sa.Column("organization_id", sa.BigInteger(), nullable=True),
        sa.Column("token_id", sa.BigInteger(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "changes", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.CheckConstraint(f"action IN {ACCOUNT_ACTIONS}", name=op.f("ck_account_changes_action_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_changes")),
    )
    op.create_index(op.f("ix_account_changes_organization_id"), "account_changes", ["organization_id"], unique=False)
    op.create_index(op.f("ix_account_changes_subject_user_id"), "account_changes", ["subject_user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_account_changes_subject_user_id"), table_name="account_changes")
    op.drop_index(op.f("ix_account_changes_organization_id"), table_name="account_changes")
    op.drop_table("account_changes")
    op.alter_column("api_tokens", "expires_at", existing_type=sa.DateTime(timezone=True), nullable=True)
    op.drop_index(op.f("ix_api_tokens_parent_token_id"), table_name="api_tokens")
    op.drop_constraint(op.f("fk_api_tokens_parent_token_id_api_tokens"), "api_tokens", type_="foreignkey")
    op.drop_column("api_tokens", "parent_token_id")
