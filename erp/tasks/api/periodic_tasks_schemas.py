"""Request and response bodies of the periodic-task API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from erp.core.input_types import (
    Int32,
    SmallDatabaseId,
    StoredDateTime,
    StoredJsonArray,
    StoredJsonObject,
    StoredText,
)
from erp.tasks.calendar import schedules
from erp.tasks.calendar.kinds import SCHEDULE_COLUMNS, IntervalPeriod, MisfirePolicy, SolarEvent
from erp.tasks.ledger_kinds import OverlapPolicy

# Bounds on what one row may carry: big enough for real arguments, small enough that a
# mistaken paste cannot bloat every message beat sends.
MAX_JSON_BYTES = 16_384
NAME_MAX = 200
# Jitter spreads an occurrence over at most a day after its slot.
MAX_JITTER_SECONDS = 86_400
PAUSE_NOTE_MAX = 2000
# Fields that cannot be NULL in the table: on update, an explicit null is refused by name.
NOT_NULLABLE_ON_UPDATE = (
    "name",
    "task",
    "args",
    "kwargs",
    "one_off",
    "enabled",
    "description",
    "misfire_policy",
    "overlap_policy",
    "jitter_seconds",
)


def _bounded_json(value: Any, what: str) -> Any:
    size = len(json.dumps(value))
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{what} is {size} bytes as JSON; at most {MAX_JSON_BYTES} are allowed")
    return value


class IntervalIn(BaseModel):
    kind: Literal["interval"]
    every: int = Field(gt=0, le=10**9, examples=[10])
    period: IntervalPeriod = "seconds"


class CrontabIn(BaseModel):
    kind: Literal["crontab"]
    minute: Annotated[StoredText, Field(max_length=240, examples=["30"])] = "*"
    hour: Annotated[StoredText, Field(max_length=96, examples=["2"])] = "*"
    day_of_week: Annotated[StoredText, Field(max_length=64, examples=["mon-fri"])] = "*"
    day_of_month: Annotated[StoredText, Field(max_length=124)] = "*"
    month_of_year: Annotated[StoredText, Field(max_length=64)] = "*"
    timezone: Annotated[StoredText, Field(max_length=64, examples=["Europe/Berlin"])] = "UTC"


class ClockedIn(BaseModel):
    kind: Literal["clocked"]
    clocked_time: StoredDateTime = Field(examples=["2030-01-01T09:00:00+01:00"])

    @field_validator("clocked_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("clocked_time needs a UTC offset, e.g. 2030-01-01T09:00:00+01:00")
        return value


class SolarIn(BaseModel):
    kind: Literal["solar"]
    event: SolarEvent
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


ScheduleIn = Annotated[IntervalIn | CrontabIn | ClockedIn | SolarIn, Field(discriminator="kind")]


def schedule_spec(schedule: IntervalIn | CrontabIn | ClockedIn | SolarIn) -> schedules.ScheduleSpec:
    """The spec an inline schedule describes."""
    return schedules.spec_from_fields(schedule.kind, schedule.model_dump(exclude={"kind"}))


class _TaskFields(BaseModel):
    """Fields shared by create and update; on update every one is optional."""

    model_config = ConfigDict(extra="forbid")

    task: Annotated[StoredText, Field(min_length=1, max_length=NAME_MAX, examples=["erp.ping"])] | None = None
    args: Annotated[StoredJsonArray, Field(examples=[[]])] | None = None
    kwargs: Annotated[StoredJsonObject, Field(examples=[{}])] | None = None
    queue: Annotated[StoredText, Field(max_length=NAME_MAX)] | None = None
    exchange: Annotated[StoredText, Field(max_length=NAME_MAX)] | None = None
    routing_key: Annotated[StoredText, Field(max_length=NAME_MAX)] | None = None
    headers: StoredJsonObject | None = None
    priority: int | None = Field(None, ge=0, le=255)
    expires: StoredDateTime | None = None
    expire_seconds: Annotated[Int32, Field(gt=0)] | None = None
    one_off: bool | None = None
    start_time: StoredDateTime | None = None
    enabled: bool | None = None
    description: Annotated[StoredText, Field(max_length=2000)] | None = None
    misfire_policy: MisfirePolicy | None = None
    overlap_policy: OverlapPolicy | None = Field(
        None,
        description="an occurrence whose previous one has not finished: `allow` (send it), `skip` (record it as"
        " skipped: overlap) or `buffer_one` (hold it until the previous one finishes; at most one held)",
    )
    jitter_seconds: Annotated[Int32, Field(ge=0, le=MAX_JITTER_SECONDS)] | None = Field(
        None, description="each occurrence is sent a stable offset in [0, jitter_seconds) after its slot"
    )
    start_deadline_seconds: Annotated[Int32, Field(gt=0)] | None = Field(
        None, description="must start within this many seconds of its slot, or it is flagged and alerted (null: off)"
    )
    finish_deadline_seconds: Annotated[Int32, Field(gt=0)] | None = Field(
        None, description="must finish within this many seconds of its slot, or it is flagged and alerted (null: off)"
    )
    auto_pause_after_failures: Annotated[Int32, Field(gt=0)] | None = Field(
        None, description="pause the task after this many failed occurrences in a row (null: never)"
    )
    schedule: ScheduleIn | None = Field(None, description="an inline schedule (one of the four kinds)")
    interval_id: SmallDatabaseId | None = Field(None, description="or: reference an existing interval schedule")
    crontab_id: SmallDatabaseId | None = None
    clocked_id: SmallDatabaseId | None = None
    solar_id: SmallDatabaseId | None = None

    @field_validator("args", "kwargs", "headers")
    @classmethod
    def _size(cls, value: Any, info: ValidationInfo) -> Any:
        return value if value is None else _bounded_json(value, str(info.field_name))

    @field_validator("expires", "start_time")
    @classmethod
    def _aware(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{info.field_name} needs a UTC offset, e.g. 2030-01-01T09:00:00Z")
        return value

    @model_validator(mode="after")
    def _at_most_one_schedule(self) -> Self:
        given = [name for name in ("schedule", *SCHEDULE_COLUMNS) if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one schedule, not {len(given)}: {', '.join(given)}")
        return self


class PeriodicTaskCreate(_TaskFields):
    name: Annotated[StoredText, Field(min_length=1, max_length=NAME_MAX, examples=["nightly sales report"])]
    task: Annotated[StoredText, Field(min_length=1, max_length=NAME_MAX, examples=["erp.ping"])]

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if all(getattr(self, name) is None for name in ("schedule", *SCHEDULE_COLUMNS)):
            raise ValueError(
                "a schedule is required: `schedule` inline or one of interval_id, crontab_id, clocked_id, solar_id"
            )
        return self

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly sales report",
                    "task": "erp.ping",
                    "schedule": {"kind": "crontab", "minute": "30", "hour": "2", "timezone": "Europe/Berlin"},
                    "kwargs": {},
                    "misfire_policy": "run_once",
                }
            ]
        },
    )


class PeriodicTaskUpdate(_TaskFields):
    name: Annotated[StoredText, Field(min_length=1, max_length=NAME_MAX)] | None = None
    version: Int32 | None = Field(None, description="the version you read; or send it as If-Match")

    @model_validator(mode="after")
    def _no_null_for_required_columns(self) -> Self:
        # Leaving a field out keeps it; null is "off" only where the column may be empty
        # (deadlines, auto-pause, routing; headers, where null means none). Elsewhere it was a
        # NOT NULL violation (a 500), or, for args and kwargs, a JSON null beat cannot send.
        nulls = [
            name for name in NOT_NULLABLE_ON_UPDATE if name in self.model_fields_set and getattr(self, name) is None
        ]
        if nulls:
            raise ValueError(f"{', '.join(nulls)}: may not be null (leave a field out to keep its value)")
        return self


class ScheduleOut(BaseModel):
    kind: str
    id: int
    fields: dict[str, Any] = Field(examples=[{"every": 10, "period": "seconds"}])


class LastRunOut(BaseModel):
    state: str
    scheduled_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_type: str | None
    error_message: str | None


class PeriodicTaskOut(BaseModel):  # type: ignore[no-redef]  # a field named kwargs, as the plugin's __init__ parameter
    id: int
    name: str
    task: str
    args: Any
    kwargs: Any
    queue: str | None
    exchange: str | None
    routing_key: str | None
    headers: Any
    priority: int | None
    expires: datetime | None
    expire_seconds: int | None
    one_off: bool
    start_time: datetime | None
    enabled: bool
    disabled_reason: str | None
    description: str
    misfire_policy: str
    last_run_at: datetime | None
    total_run_count: int
    next_run_at: datetime | None
    version: int
    from_config: bool
    created_at: datetime
    updated_at: datetime
    schedule: ScheduleOut
    overlap_policy: str
    jitter_seconds: int
    start_deadline_seconds: int | None
    finish_deadline_seconds: int | None
    auto_pause_after_failures: int | None
    consecutive_failures: int
    paused_at: datetime | None
    paused_by: str | None = Field(
        description="the email of who paused it, `auto-pause`, or `command line` (python -m erp without --as)"
    )
    pause_note: str | None
    last_run: LastRunOut | None = Field(None, description="its latest occurrence in the run ledger")


class PeriodicTaskPage(BaseModel):
    items: list[PeriodicTaskOut]
    total: int
    limit: int
    offset: int


class PreviewRun(BaseModel):
    scheduled_at: datetime = Field(description="the slot")
    due_at: datetime = Field(description="when it is sent: the slot plus its jitter")


class RunPreview(BaseModel):
    next_runs: list[datetime] = Field(description="the slots (kept for clients of earlier versions)")
    runs: list[PreviewRun]


class PeriodicTaskChangeOut(BaseModel):
    id: int
    periodic_task_id: int
    periodic_task_name: str
    action: str
    actor_user_id: int | None
    actor_email: str | None
    changed_at: datetime
    changes: dict[str, Any]


# --- pausing (its occurrences are recorded in the run ledger as skipped) ---------------------


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[StoredText, Field(min_length=1, max_length=PAUSE_NOTE_MAX, examples=["supplier API down"])] = Field(
        description="why it is paused; shown with who paused it and when"
    )
