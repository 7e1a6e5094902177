"""Scheduler tables: schedules, periodic tasks, their change log, beat heartbeats; triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEDULE_TABLES = {
    "interval_schedules": "interval_id",
    "crontab_schedules": "crontab_id",
    "clocked_schedules": "clocked_id",
    "solar_schedules": "solar_id",
}

# Schedule changes made with plain SQL (not through the API) must reach beat too:
# - a changed schedule resets next_run_at to NULL, which beat recomputes on its next tick;
# - every statement that touches these tables NOTIFYs beat, which wakes at once.
TRIGGERS_UP = """
CREATE FUNCTION erp_notify_periodic_tasks_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('erp_periodic_tasks', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION erp_reset_next_run_at() RETURNS trigger AS $$
BEGIN
    NEW.next_run_at := NULL;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER periodic_tasks_reschedule
    BEFORE UPDATE ON periodic_tasks FOR EACH ROW
    WHEN (NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at AND (
        NEW.interval_id IS DISTINCT FROM OLD.interval_id
        OR NEW.crontab_id IS DISTINCT FROM OLD.crontab_id
        OR NEW.clocked_id IS DISTINCT FROM OLD.clocked_id
        OR NEW.solar_id IS DISTINCT FROM OLD.solar_id
        OR NEW.start_time IS DISTINCT FROM OLD.start_time
        OR (NEW.enabled AND NOT OLD.enabled)))
    EXECUTE FUNCTION erp_reset_next_run_at();

CREATE FUNCTION erp_reset_next_run_at_of_users() RETURNS trigger AS $$
BEGIN
    EXECUTE format('UPDATE periodic_tasks SET next_run_at = NULL WHERE %I = $1', TG_ARGV[0]) USING NEW.id;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""


def upgrade() -> None:
    op.create_table(
        "interval_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("every", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=24), nullable=False),
        sa.CheckConstraint("every > 0", name=op.f("ck_interval_schedules_every_positive")),
        sa.CheckConstraint(
            "period IN ('days', 'hours', 'minutes', 'seconds', 'microseconds')",
            name=op.f("ck_interval_schedules_period_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interval_schedules")),
    )
    op.create_table(
        "crontab_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.String(length=240), nullable=False),
        sa.Column("hour", sa.String(length=96), nullable=False),
        sa.Column("day_of_week", sa.String(length=64), nullable=False),
        sa.Column("day_of_month", sa.String(length=124), nullable=False),
        sa.Column("month_of_year", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crontab_schedules")),
    )
    op.create_table(
        "clocked_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clocked_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clocked_schedules")),
    )
    op.create_table(
        "solar_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=24), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.CheckConstraint("latitude BETWEEN -90 AND 90", name=op.f("ck_solar_schedules_latitude_range")),
        sa.CheckConstraint("longitude BETWEEN -180 AND 180", name=op.f("ck_solar_schedules_longitude_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_solar_schedules")),
    )
    op.create_table(
        "periodic_tasks",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("args", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("kwargs", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=True),
        sa.Column("exchange", sa.String(length=200), nullable=True),
        sa.Column("routing_key", sa.String(length=200), nullable=True),
        sa.Column("headers", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expire_seconds", sa.Integer(), nullable=True),
        sa.Column("one_off", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("misfire_policy", sa.String(length=16), server_default="run_once", nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_run_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("from_config", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("interval_id", sa.Integer(), nullable=True),
        sa.Column("crontab_id", sa.Integer(), nullable=True),
        sa.Column("clocked_id", sa.Integer(), nullable=True),
        sa.Column("solar_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "num_nonnulls(interval_id, crontab_id, clocked_id, solar_id) = 1",
            name=op.f("ck_periodic_tasks_exactly_one_schedule"),
        ),
        sa.CheckConstraint(
            "priority IS NULL OR priority BETWEEN 0 AND 255", name=op.f("ck_periodic_tasks_priority_range")
        ),
        sa.CheckConstraint(
            "expire_seconds IS NULL OR expire_seconds > 0", name=op.f("ck_periodic_tasks_expire_seconds_positive")
        ),
        sa.CheckConstraint(
            "misfire_policy IN ('run_once', 'skip', 'run_all')", name=op.f("ck_periodic_tasks_misfire_policy_known")
        ),
        sa.ForeignKeyConstraint(
            ["clocked_id"],
            ["clocked_schedules.id"],
            name=op.f("fk_periodic_tasks_clocked_id_clocked_schedules"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["crontab_id"],
            ["crontab_schedules.id"],
            name=op.f("fk_periodic_tasks_crontab_id_crontab_schedules"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["interval_id"],
            ["interval_schedules.id"],
            name=op.f("fk_periodic_tasks_interval_id_interval_schedules"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["solar_id"],
            ["solar_schedules.id"],
            name=op.f("fk_periodic_tasks_solar_id_solar_schedules"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periodic_tasks")),
        sa.UniqueConstraint("name", name=op.f("uq_periodic_tasks_name")),
    )
    op.create_index(
        "ix_periodic_tasks_due",
        "periodic_tasks",
        ["next_run_at"],
        postgresql_where=sa.text("enabled AND next_run_at IS NOT NULL"),
    )
    op.create_index(
        "ix_periodic_tasks_unscheduled",
        "periodic_tasks",
        ["id"],
        postgresql_where=sa.text("enabled AND next_run_at IS NULL"),
    )
    for column in SCHEDULE_TABLES.values():
        op.create_index(op.f(f"ix_periodic_tasks_{column}"), "periodic_tasks", [column])
    op.create_table(
        "beat_heartbeats",
        sa.Column("instance", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runs_sent", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_beat_heartbeats")),
    )
    op.create_index(op.f("ix_beat_heartbeats_last_tick_at"), "beat_heartbeats", ["last_tick_at"])

    op.create_table(
        "periodic_task_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("periodic_task_id", sa.BigInteger(), nullable=False),
        sa.Column("periodic_task_name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor_user_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_email", sa.String(length=320), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("changes", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periodic_task_changes")),
    )
    op.create_index(op.f("ix_periodic_task_changes_periodic_task_id"), "periodic_task_changes", ["periodic_task_id"])

    op.execute(TRIGGERS_UP)
    for table, column in SCHEDULE_TABLES.items():
        op.execute(
            f"CREATE TRIGGER {table}_reschedule_users AFTER UPDATE ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION erp_reset_next_run_at_of_users('{column}')"
        )
    for table in ("periodic_tasks", *SCHEDULE_TABLES):
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION erp_notify_periodic_tasks_changed()"
        )


def downgrade() -> None:
    op.drop_table("periodic_task_changes")
    op.drop_table("beat_heartbeats")
    op.drop_table("periodic_tasks")
    for table in SCHEDULE_TABLES:
        op.drop_table(table)
    op.execute("DROP FUNCTION erp_notify_periodic_tasks_changed()")
    op.execute("DROP FUNCTION erp_reset_next_run_at()")
    op.execute("DROP FUNCTION erp_reset_next_run_at_of_users()")
