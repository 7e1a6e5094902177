"""The run ledger (periodic_task_runs), alerts, and the per-schedule run policies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY_CHECKS = {
    "overlap_policy_known": "overlap_policy IN ('allow', 'skip', 'buffer_one')",
    "jitter_range": "jitter_seconds BETWEEN 0 AND 86400",
    "start_deadline_positive": "start_deadline_seconds IS NULL OR start_deadline_seconds > 0",
    "finish_deadline_positive": "finish_deadline_seconds IS NULL OR finish_deadline_seconds > 0",
    "auto_pause_positive": "auto_pause_after_failures IS NULL OR auto_pause_after_failures > 0",
}


def upgrade() -> None:
    op.create_table(
        "periodic_task_alerts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("periodic_task_id", sa.BigInteger(), nullable=True),
        sa.Column("periodic_task_name", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periodic_task_alerts")),
    )
    op.create_index(op.f("ix_periodic_task_alerts_created_at"), "periodic_task_alerts", ["created_at"], unique=False)
    op.create_index(
        "ix_periodic_task_alerts_pending",
        "periodic_task_alerts",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.create_index(
        op.f("ix_periodic_task_alerts_periodic_task_id"), "periodic_task_alerts", ["periodic_task_id"], unique=False
    )
    op.create_table(
        "periodic_task_runs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("periodic_task_id", sa.BigInteger(), nullable=False),
        sa.Column("periodic_task_name", sa.String(length=200), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("origin", sa.String(length=16), server_default="schedule", nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("skip_reason", sa.String(length=16), nullable=True),
        sa.Column("planned_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lateness_seconds", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("start_deadline_missed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("finish_deadline_missed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint(
            "origin IN ('schedule', 'manual', 'backfill')", name=op.f("ck_periodic_task_runs_origin_known")
        ),
        sa.CheckConstraint(
            "skip_reason IS NULL OR skip_reason IN ('misfire', 'overlap', 'paused', 'expired')",
            name=op.f("ck_periodic_task_runs_skip_reason_known"),
        ),
        sa.CheckConstraint(
            "state IN ('held', 'planned', 'sent', 'started', 'succeeded', 'failed', 'retried', 'revoked', 'skipped')",
            name=op.f("ck_periodic_task_runs_state_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periodic_task_runs")),
        sa.UniqueConstraint("message_id", name=op.f("uq_periodic_task_runs_message_id")),
        sa.UniqueConstraint("periodic_task_id", "scheduled_at", name=op.f("uq_periodic_task_runs_periodic_task_id")),
    )
    op.create_index(
        "ix_periodic_task_runs_outbox",
        "periodic_task_runs",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("state = 'planned'"),
    )
    op.create_index("ix_periodic_task_runs_scheduled_at", "periodic_task_runs", ["scheduled_at"], unique=False)
    op.create_index(
        "ix_periodic_task_runs_unfinished",
        "periodic_task_runs",
        ["periodic_task_id", "scheduled_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('held', 'planned', 'sent', 'started', 'retried')"),
    )
    op.add_column(
        "periodic_tasks", sa.Column("overlap_policy", sa.String(length=16), server_default="allow", nullable=False)
    )
    op.add_column(
        "periodic_tasks", sa.Column("jitter_seconds", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("periodic_tasks", sa.Column("start_deadline_seconds", sa.Integer(), nullable=True))
    op.add_column("periodic_tasks", sa.Column("finish_deadline_seconds", sa.Integer(), nullable=True))
    op.add_column("periodic_tasks", sa.Column("auto_pause_after_failures", sa.Integer(), nullable=True))
    op.add_column(
        "periodic_tasks", sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("periodic_tasks", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("periodic_tasks", sa.Column("paused_by", sa.String(length=320), nullable=True))
    op.add_column("periodic_tasks", sa.Column("pause_note", sa.Text(), nullable=True))
    for name, condition in POLICY_CHECKS.items():
        op.create_check_constraint(op.f(f"ck_periodic_tasks_{name}"), "periodic_tasks", condition)


def downgrade() -> None:
    for name in POLICY_CHECKS:
        op.drop_constraint(op.f(f"ck_periodic_tasks_{name}"), "periodic_tasks", type_="check")
    op.drop_column("periodic_tasks", "pause_note")
    op.drop_column("periodic_tasks", "paused_by")
    op.drop_column("periodic_tasks", "paused_at")
    op.drop_column("periodic_tasks", "consecutive_failures")
    op.drop_column("periodic_tasks", "auto_pause_after_failures")
    op.drop_column("periodic_tasks", "finish_deadline_seconds")
    op.drop_column("periodic_tasks", "start_deadline_seconds")
    op.drop_column("periodic_tasks", "jitter_seconds")
    op.drop_column("periodic_tasks", "overlap_policy")
    op.drop_index(
        "ix_periodic_task_runs_unfinished",
        table_name="periodic_task_runs",
        postgresql_where=sa.text("state IN ('held', 'planned', 'sent', 'started', 'retried')"),
    )
    op.drop_index("ix_periodic_task_runs_scheduled_at", table_name="periodic_task_runs")
    op.drop_index(
        "ix_periodic_task_runs_outbox", table_name="periodic_task_runs", postgresql_where=sa.text("state = 'planned'")
    )
    op.drop_table("periodic_task_runs")
    op.drop_index(op.f("ix_periodic_task_alerts_periodic_task_id"), table_name="periodic_task_alerts")
    op.drop_index(
        "ix_periodic_task_alerts_pending",
        table_name="periodic_task_alerts",
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.drop_index(op.f("ix_periodic_task_alerts_created_at"), table_name="periodic_task_alerts")
    op.drop_table("periodic_task_alerts")
