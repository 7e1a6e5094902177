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
from erp.tasks import schedules
from erp.tasks.schedule_kinds import SCHEDULE_COLUMNS, IntervalPeriod, MisfirePolicy, SolarEvent

# Bounds on what one row may carry: big enough for real arguments, small enough that a
# mistaken paste cannot bloat every message beat sends.
MAX_JSON_BYTES = 16_384
NAME_MAX = 200


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


class ScheduleOut(BaseModel):
    kind: str
    id: int
    fields: dict[str, Any] = Field(examples=[{"every": 10, "period": "seconds"}])


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


class PeriodicTaskPage(BaseModel):
    items: list[PeriodicTaskOut]
    total: int
    limit: int
    offset: int


class RunPreview(BaseModel):
    next_runs: list[datetime]


class PeriodicTaskChangeOut(BaseModel):
    id: int
    periodic_task_id: int
    periodic_task_name: str
    action: str
    actor_user_id: int | None
    actor_email: str | None
    changed_at: datetime
    changes: dict[str, Any]
