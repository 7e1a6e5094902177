"""Request and response bodies of the run ledger's API: backfills, runs, "why not", alerts and
the load forecast."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from erp.core.input_types import StoredDateTime
from erp.tasks.api.forecast import LoadForecast
from erp.tasks.api.runs import RunCursor
from erp.tasks.ledger_kinds import AlertKind, RunOrigin, RunState, SkipReason
from erp.tasks.scheduler_models import PeriodicTaskAlertDB, PeriodicTaskRunDB


class BackfillIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: Annotated[StoredDateTime, Field(alias="from", description="the first slot considered (inclusive)")]
    end: Annotated[
        StoredDateTime, Field(alias="to", description="the last slot considered (inclusive); not in the future")
    ]

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime, info: ValidationInfo) -> datetime:
        if value.tzinfo is None:
            raise ValueError(
                f"{'from' if info.field_name == 'start' else 'to'} needs a UTC offset, e.g. 2030-01-01T09:00:00Z"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError("`to` is before `from`")
        return self


class BackfillOut(BaseModel):
    planned: int = Field(description="occurrences written to the ledger as planned (beat sends them at once)")
    already_recorded: int = Field(
        description="occurrences the ledger already had (ran, running or skipped): not run again"
    )
    first_slot: datetime | None
    last_slot: datetime | None


class RunOut(BaseModel):
    id: int
    periodic_task_id: int
    periodic_task_name: str
    task_name: str
    origin: RunOrigin
    scheduled_at: datetime = Field(description="its slot")
    due_at: datetime = Field(description="the slot plus its jitter (a backfill: when it was asked for)")
    message_id: str = Field(description="the Celery task id of its message")
    state: RunState
    skip_reason: SkipReason | None
    planned_at: datetime
    sent_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lateness_seconds: float | None = Field(description="from its slot to the start of the task body")
    worker: str | None
    attempts: int
    error_type: str | None
    error_message: str | None
    start_deadline_missed: bool
    finish_deadline_missed: bool


class RunPage(BaseModel):
    items: list[RunOut]
    limit: int
    offset: int
    has_more: bool
    next_before: str | None = Field(
        None,
        description="pass as `before` (with offset 0) for the next (older) page, keyset paging; null on the last page",
    )

    @classmethod
    def of(cls, rows: list[PeriodicTaskRunDB], limit: int, offset: int, has_more: bool) -> RunPage:
        """A page of ledger rows, as the API, the console and `runs list` answer it."""
        return cls(
            items=[RunOut.model_validate(row, from_attributes=True) for row in rows],
            limit=limit,
            offset=offset,
            has_more=has_more,
            next_before=RunCursor.after(rows[-1]).text() if has_more and rows else None,
        )


class RunAtOut(BaseModel):
    """What happened at one moment of a schedule: its ledger row, or why there is none."""

    time: datetime
    run: RunOut | None = Field(description="the occurrence of that slot (or the nearest within the tolerance)")
    reasons: list[str] = Field(
        description="codes: recorded, deleted, created_after, before_start_time, expired, disabled, paused,"
        " not_a_slot, pruned, in_future, schedule_changed, not_recorded"
    )
    explanation: list[str] = Field(description="the same, in sentences")
    nearest_slots: list[datetime] = Field(description="the slots just before and after `time`, when it is not one")


class AlertOut(BaseModel):
    id: int
    kind: AlertKind
    periodic_task_id: int | None
    periodic_task_name: str | None
    run_id: int | None
    message: str
    created_at: datetime
    delivered_at: datetime | None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


class AlertPage(BaseModel):
    items: list[AlertOut]
    limit: int
    offset: int
    has_more: bool

    @classmethod
    def of(cls, rows: list[PeriodicTaskAlertDB], limit: int, offset: int, has_more: bool) -> AlertPage:
        return cls(
            items=[AlertOut.model_validate(row, from_attributes=True) for row in rows],
            limit=limit,
            offset=offset,
            has_more=has_more,
        )


class MinuteLoad(BaseModel):
    minute: datetime
    occurrences: int


class ScheduleLoadOut(BaseModel):
    start: datetime = Field(description="`from`, rounded down to the minute")
    end: datetime = Field(description="`to`, rounded up to the minute")
    total: int = Field(description="occurrences in the window across all enabled, not paused schedules")
    schedules: int = Field(description="enabled, not paused schedules considered")
    jittered_schedules: int = Field(
        description="of those, how many have jitter: the forecast counts slots, so their messages go out up to"
        " jitter_seconds later than the minute shown"
    )
    not_computable: int = Field(
        description="schedules whose definition cannot be computed (broken rows): counted as firing nothing"
    )
    minutes: list[MinuteLoad] = Field(description="every minute of the window, in order (zeros included)")
    busiest: list[MinuteLoad] = Field(description="the busiest minutes, busiest first")

    @classmethod
    def of(cls, result: LoadForecast, top: int) -> ScheduleLoadOut:
        """The forecast with its `top` busiest minutes."""
        return cls(
            start=result.start,
            end=result.end,
            total=result.total,
            schedules=result.schedules,
            jittered_schedules=result.jittered_schedules,
            not_computable=result.not_computable,
            minutes=[
                MinuteLoad(minute=result.minute(index), occurrences=count)
                for index, count in enumerate(result.per_minute)
            ],
            busiest=[MinuteLoad(minute=minute, occurrences=count) for minute, count in result.busiest(top)],
        )


class DueScheduleOut(BaseModel):
    id: int
    name: str
    task: str
    scheduled_at: datetime = Field(description="its first slot in the minute")
    firings: int = Field(description="its slots in the minute (more than one for an interval under a minute)")


class MinuteSchedulesOut(BaseModel):
    minute: datetime = Field(description="`at`, rounded down to the minute")
    occurrences: int = Field(description="the minute's occurrences: its count in /schedule-load")
    schedules: int = Field(description="schedules with a slot in the minute")
    items: list[DueScheduleOut] = Field(description="the first `limit` of them, by slot, then name")
