"""Tables of the database scheduler: schedules, periodic tasks and beat heartbeats.

`periodic_tasks.next_run_at` is the heart of it: beat asks only for enabled rows whose
`next_run_at` has come (a partial index), sends them and advances the column in the same
transaction. NULL means "to be computed": the API fills it in when it saves a task, and
triggers (see the migration) reset it when a schedule changes through plain SQL, so beat
computes it on its next tick. Nothing is ever reloaded wholesale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from erp.core.db import Base
from erp.tasks.calendar import schedules
from erp.tasks.calendar.kinds import (
    INTERVAL_PERIODS,
    MISFIRE_POLICIES,
    MISFIRE_RUN_ONCE,
    SCHEDULE_KINDS,
    ScheduleKind,
    schedule_column,
)
from erp.tasks.ledger_kinds import OVERLAP_POLICIES, RUN_ORIGINS, RUN_STATES, SKIP_REASONS, UNFINISHED_STATES


class BrokenScheduleError(ValueError):
    """A row that cannot be scheduled as stored; beat disables it with this message."""


class IntervalScheduleDB(Base):
    __tablename__ = "interval_schedules"
    __table_args__ = (
        CheckConstraint("every > 0", name="every_positive"),
        CheckConstraint(f"period IN {INTERVAL_PERIODS}", name="period_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    every: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(24))


class CrontabScheduleDB(Base):
    __tablename__ = "crontab_schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    minute: Mapped[str] = mapped_column(String(240), default="*")
    hour: Mapped[str] = mapped_column(String(96), default="*")
    day_of_week: Mapped[str] = mapped_column(String(64), default="*")
    day_of_month: Mapped[str] = mapped_column(String(124), default="*")
    month_of_year: Mapped[str] = mapped_column(String(64), default="*")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")


class ClockedScheduleDB(Base):
    __tablename__ = "clocked_schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    clocked_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SolarScheduleDB(Base):
    __tablename__ = "solar_schedules"
    __table_args__ = (
        CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(24))
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)


ScheduleRow = IntervalScheduleDB | CrontabScheduleDB | ClockedScheduleDB | SolarScheduleDB
SCHEDULE_MODELS: dict[ScheduleKind, type[ScheduleRow]] = {
    "interval": IntervalScheduleDB,
    "crontab": CrontabScheduleDB,
    "clocked": ClockedScheduleDB,
    "solar": SolarScheduleDB,
}


def schedule_row_fields(row: ScheduleRow) -> dict[str, Any]:
    """A schedule row's own columns (its id left out)."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns if column.key != "id"}


class PeriodicTaskDB(Base):
    __tablename__ = "periodic_tasks"
    __table_args__ = (
        CheckConstraint("num_nonnulls(interval_id, crontab_id, clocked_id, solar_id) = 1", name="exactly_one_schedule"),
        CheckConstraint("priority IS NULL OR priority BETWEEN 0 AND 255", name="priority_range"),
        CheckConstraint("expire_seconds IS NULL OR expire_seconds > 0", name="expire_seconds_positive"),
        CheckConstraint(f"misfire_policy IN {MISFIRE_POLICIES}", name="misfire_policy_known"),
        CheckConstraint(f"overlap_policy IN {OVERLAP_POLICIES}", name="overlap_policy_known"),
        CheckConstraint("jitter_seconds BETWEEN 0 AND 86400", name="jitter_range"),
        CheckConstraint("start_deadline_seconds IS NULL OR start_deadline_seconds > 0", name="start_deadline_positive"),
        CheckConstraint(
            "finish_deadline_seconds IS NULL OR finish_deadline_seconds > 0", name="finish_deadline_positive"
        ),
        CheckConstraint(
            "auto_pause_after_failures IS NULL OR auto_pause_after_failures > 0", name="auto_pause_positive"
        ),
        # Beat's only questions: what is due, and what needs its next run computed.
        Index("ix_periodic_tasks_due", "next_run_at", postgresql_where=text("enabled AND next_run_at IS NOT NULL")),
        Index("ix_periodic_tasks_unscheduled", "id", postgresql_where=text("enabled AND next_run_at IS NULL")),
        # The name search of the API and the console (`name ILIKE '%part%'`, any case, anywhere
        # in the name): a B-tree cannot serve a pattern that starts with `%`; trigrams can
        # (pg_trgm, created by migration 0008).
        Index(
            "ix_periodic_tasks_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(200))
    args: Mapped[Any] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    kwargs: Mapped[Any] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    queue: Mapped[str | None] = mapped_column(String(200))
    exchange: Mapped[str | None] = mapped_column(String(200))
    routing_key: Mapped[str | None] = mapped_column(String(200))
    headers: Mapped[Any] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    priority: Mapped[int | None] = mapped_column(Integer)
    # No run is sent after `expires`; `expire_seconds` is the expiry put on each sent message.
    expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expire_seconds: Mapped[int | None] = mapped_column(Integer)
    one_off: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Why beat stopped or disabled the task (expired, finished, broken row); NULL while healthy.
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    misfire_policy: Mapped[str] = mapped_column(String(16), default=MISFIRE_RUN_ONCE, server_default=MISFIRE_RUN_ONCE)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_run_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped by every edit through the API; a stale version in an update is a 409.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    from_config: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # --- run ledger policies (see PeriodicTaskRunDB) ---
    overlap_policy: Mapped[str] = mapped_column(String(16), default="allow", server_default="allow")
    # Each occurrence is sent a stable offset in [0, jitter_seconds) after its slot.
    jitter_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Must start within / finish within this many seconds of its slot, or the occurrence is
    # marked and an alert raised.
    start_deadline_seconds: Mapped[int | None] = mapped_column(Integer)
    finish_deadline_seconds: Mapped[int | None] = mapped_column(Integer)
    # Paused after this many failed occurrences in a row (NULL: never).
    auto_pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # A paused task keeps its schedule; each occurrence is recorded as skipped (paused).
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paused_by: Mapped[str | None] = mapped_column(String(320))
    pause_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    interval_id: Mapped[int | None] = mapped_column(
        ForeignKey("interval_schedules.id", ondelete="RESTRICT"), index=True
    )
    crontab_id: Mapped[int | None] = mapped_column(ForeignKey("crontab_schedules.id", ondelete="RESTRICT"), index=True)
    clocked_id: Mapped[int | None] = mapped_column(ForeignKey("clocked_schedules.id", ondelete="RESTRICT"), index=True)
    solar_id: Mapped[int | None] = mapped_column(ForeignKey("solar_schedules.id", ondelete="RESTRICT"), index=True)

    interval: Mapped[IntervalScheduleDB | None] = relationship(lazy="joined")
    crontab: Mapped[CrontabScheduleDB | None] = relationship(lazy="joined")
    clocked: Mapped[ClockedScheduleDB | None] = relationship(lazy="joined")
    solar: Mapped[SolarScheduleDB | None] = relationship(lazy="joined")

    @property
    def schedule_kind(self) -> ScheduleKind:
        for kind in SCHEDULE_KINDS:
            if getattr(self, schedule_column(kind)) is not None:
                return kind
        raise BrokenScheduleError(f"periodic task {self.name!r} has no schedule")

    @property
    def schedule_row(self) -> ScheduleRow:
        row: ScheduleRow | None = getattr(self, self.schedule_kind)
        if row is None:
            raise BrokenScheduleError(f"periodic task {self.name!r} has no schedule")
        return row

    def get_schedule(self) -> schedules.ScheduleSpec:
        return schedules.spec_from_fields(self.schedule_kind, schedule_row_fields(self.schedule_row))

    def get_args(self) -> list[Any]:
        return decode_args(self.args)

    def get_kwargs(self) -> dict[str, Any]:
        return decode_kwargs(self.kwargs)

    def get_headers(self) -> dict[str, Any]:
        return decode_headers(self.headers)

    @property
    def grid_anchor(self) -> datetime | None:
        """A slot of its interval's grid (its next run, else its last, else its start time), so
        slots computed elsewhere (a backfill, "why not") line up with the ones beat recorded."""
        return self.next_run_at or self.last_run_at or self.start_time


def compute_next_run_at(task: PeriodicTaskDB, now: datetime) -> datetime | None:
    """The next run of a task whose schedule is new or changed, or that was enabled again
    (None: it will not run again). Raises ScheduleError for a schedule that cannot be used.

    Shared by the API (on save) and beat (rows whose next_run_at was reset). The next run is
    never in the past: time a task spent disabled is not missed time, so enabling it again
    continues at its next slot instead of catching up (an interval keeps its grid).
    """
    spec = task.get_schedule()
    schedules.validate(spec)
    if task.total_run_count and (task.one_off or isinstance(spec, schedules.ClockedSpec)):
        return None
    if isinstance(spec, schedules.IntervalSpec) and task.last_run_at is not None:
        # Keep the cadence of a task that has run: the first slot of its grid from now on, and
        # never its last run again.
        next_run = schedules.first_run_at(spec, now=now, start_time=task.last_run_at)
        if next_run is not None and next_run <= task.last_run_at:
            next_run = schedules.next_run_after(spec, task.last_run_at)
        return max(next_run, task.start_time) if next_run is not None and task.start_time else next_run
    return schedules.first_run_at(spec, now=now, start_time=task.start_time)


def decode_args(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise BrokenScheduleError(f"args must be a JSON array, found {type(value).__name__}: {value!r:.80}")
    return value


def decode_kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BrokenScheduleError(f"kwargs must be a JSON object, found {type(value).__name__}: {value!r:.80}")
    return value


def decode_headers(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BrokenScheduleError(f"headers must be a JSON object, found {type(value).__name__}: {value!r:.80}")
    return value


# How often a beat writes its heartbeat row (erp.tasks.beat.heartbeat).
HEARTBEAT_EVERY_SECONDS = 5


def stale_after_seconds(max_loop_interval_seconds: float) -> float:
    """Three missed heartbeats (or loop intervals, if longer) mean a beat is not ticking."""
    return 3 * max(HEARTBEAT_EVERY_SECONDS, max_loop_interval_seconds)


class BeatHeartbeatDB(Base):
    """One row per running beat process: a health endpoint reads the latest tick."""

    __tablename__ = "beat_heartbeats"

    instance: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_tick_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    runs_sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class PeriodicTaskChangeDB(Base):
    """Who changed which periodic task, when, and what changed ({field: [old, new]}).

    No foreign key to periodic_tasks: the history of a deleted task stays readable.
    """

    __tablename__ = "periodic_task_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    periodic_task_id: Mapped[int] = mapped_column(BigInteger, index=True)
    periodic_task_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_email: Mapped[str | None] = mapped_column(String(320))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    changes: Mapped[Any] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


class PeriodicTaskRunDB(Base):
    """The run ledger: one row per occurrence of a periodic task (unique per task and slot).

    Beat writes an occurrence in the same transaction that advances its periodic task (an
    outbox: `planned`, or `skipped` with a reason, or `held` under the buffer_one policy),
    publishes planned ones once they are due (`due_at`: the slot plus its jitter) and marks them
    `sent`. The worker turns a sent occurrence into `started` before the task body runs, and
    drops a message whose occurrence already ran or runs elsewhere; it then records the
    outcome. No foreign key to periodic_tasks: the history of a deleted task stays readable.
    """

    __tablename__ = "periodic_task_runs"
    __table_args__ = (
        UniqueConstraint("periodic_task_id", "scheduled_at"),
        CheckConstraint(f"state IN {RUN_STATES}", name="state_known"),
        CheckConstraint(f"skip_reason IS NULL OR skip_reason IN {SKIP_REASONS}", name="skip_reason_known"),
        CheckConstraint(f"origin IN {RUN_ORIGINS}", name="origin_known"),
        # The outbox: what beat publishes next.
        Index("ix_periodic_task_runs_outbox", "due_at", postgresql_where=text("state = 'planned'")),
        # Occurrences not finished yet: overlaps, held ones, deadlines.
        Index(
            "ix_periodic_task_runs_unfinished",
            "periodic_task_id",
            "scheduled_at",
            postgresql_where=text(f"state IN {UNFINISHED_STATES}"),
        ),
        # The ledger's pages: newest slot first, the run id breaking ties (alembic 0009).
        Index("ix_periodic_task_runs_scheduled_at_id", "scheduled_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    periodic_task_id: Mapped[int] = mapped_column(BigInteger)
    periodic_task_name: Mapped[str] = mapped_column(String(200))
    task_name: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(16), default="schedule", server_default="schedule")
    scheduled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    skip_reason: Mapped[str | None] = mapped_column(String(16))
    planned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Seconds from the slot to the start of the task body.
    lateness_seconds: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200))
    # Times the worker started it (a redelivery after its worker died starts it again).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Times beat published it (again, when the broker lost its message or its worker died).
    publish_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    start_deadline_missed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    finish_deadline_missed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class PeriodicTaskAlertDB(Base):
    """Something an operator should hear about, delivered to the webhooks of the settings.

    Written where it is noticed (beat: missed deadlines, a schedule that stopped firing; the
    worker: a failure, an auto-pause) and delivered by a worker task with retries, so a slow
    webhook never holds beat up.
    """

    __tablename__ = "periodic_task_alerts"
    __table_args__ = (
        Index("ix_periodic_task_alerts_pending", "next_attempt_at", postgresql_where=text("delivered_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    periodic_task_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    periodic_task_name: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
