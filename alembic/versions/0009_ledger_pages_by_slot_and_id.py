"""The run ledger's pages read by (scheduled_at, id): `ix_periodic_task_runs_scheduled_at_id`.

Every ledger page (`GET /api/v1/admin/runs`, the console's runs page, `runs list`) is ordered
newest slot first, the run id breaking ties, and pages on to the next by that pair. Over an
index of the slot alone, PostgreSQL read every occurrence of the newest slot to sort them by
id: at a herd's slot (100,000 schedules due at the same minute) the first page read 100,001
rows and took 56 ms; over (scheduled_at, id) it reads the page's 51. The new index replaces
`ix_periodic_task_runs_scheduled_at`: its first column serves what that one served (a time
range, the last hour's count, the retention's delete).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_periodic_task_runs_scheduled_at_id", "periodic_task_runs", ["scheduled_at", "id"], unique=False)
    op.drop_index("ix_periodic_task_runs_scheduled_at", table_name="periodic_task_runs")


def downgrade() -> None:
    op.create_index("ix_periodic_task_runs_scheduled_at", "periodic_task_runs", ["scheduled_at"], unique=False)
    op.drop_index("ix_periodic_task_runs_scheduled_at_id", table_name="periodic_task_runs")
