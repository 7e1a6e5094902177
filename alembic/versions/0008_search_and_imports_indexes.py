"""Indexes for the members' imports pages and the schedules' name search (pg_trgm).

- `ix_data_imports_organization_id_id` on (organization_id, id): `GET
  /api/v1/organizations/{id}/imports` (and the console's members' page) reads an organization's
  imports newest first by id, a keyset page at a time; with this index a page is one short
  range of it. It replaces `ix_data_imports_organization_id` (its first column serves every
  lookup by organization, the foreign key's cascade included).
- `ix_periodic_tasks_name_trgm`, a GIN trigram index on periodic_tasks.name: the name search
  of `GET /api/v1/admin/periodic-tasks?name=` and of the console is `name ILIKE '%part%'`,
  which no B-tree serves. pg_trgm ships with PostgreSQL's contrib, is a trusted extension
  (PostgreSQL 13+: a database owner may create it) and is allowed on Heroku Postgres.

The downgrade drops the indexes but leaves the extension: other objects of the database may
use it, and having it costs nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_periodic_tasks_name_trgm",
        "periodic_tasks",
        ["name"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    )
    op.create_index("ix_data_imports_organization_id_id", "data_imports", ["organization_id", "id"], unique=False)
    op.drop_index("ix_data_imports_organization_id", table_name="data_imports")


def downgrade() -> None:
    op.create_index("ix_data_imports_organization_id", "data_imports", ["organization_id"], unique=False)
    op.drop_index("ix_data_imports_organization_id_id", table_name="data_imports")
    op.drop_index("ix_periodic_tasks_name_trgm", table_name="periodic_tasks")
