"""Creating a schedule from the console: the form's fields as the API's request body, and the
preview of an unsaved schedule from the calendar beat uses.

The body is validated by the API's own schema (`PeriodicTaskCreate`) and saved by its own
service, so the console accepts exactly what the API accepts and says why it refuses with the
API's words, each message at the field it is about. The preview walks the schedule's slots
the way a new task's first run and its successors are computed when it is saved
(`first_run_at`, then `slots_after`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from erp.console.views import PreviewSlot, preview_slots
from erp.tasks.api.periodic_tasks_schemas import (
    CrontabIn,
    IntervalIn,
    PeriodicTaskCreate,
    PeriodicTaskUpdate,
    schedule_spec,
)
from erp.tasks.calendar import schedules
from erp.tasks.calendar.words import describe
from erp.tasks.scheduler_models import BrokenScheduleError, PeriodicTaskDB

PREVIEW_COUNT = 10
KINDS = ("crontab", "interval")
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")
INTERVAL_FIELDS = ("every", "period")
# Fields of the form, with what an empty form shows.
DEFAULTS: dict[str, str] = {
    "name": "",
    "task": "",
    "description": "",
    "kind": "crontab",
    "every": "10",
    "period": "minutes",
    "minute": "0",
    "hour": "*",
    "day_of_week": "*",
    "day_of_month": "*",
    "month_of_year": "*",
    "timezone": "UTC",
}


def form_values(params: Any) -> dict[str, str]:
    """The form's fields (from a query string or a posted form), defaults for those missing."""
    return {name: str(params.get(name, default))[:2000] for name, default in DEFAULTS.items()}


def values_of(task: PeriodicTaskDB) -> dict[str, str] | None:
    """The form's fields for a saved task; None for a schedule this form cannot edit (clocked,
    solar, or a row beat could not read): those are edited through the API."""
    try:
        spec = task.get_schedule()
    except BrokenScheduleError:
        return None
    values = {**DEFAULTS, "name": task.name, "task": task.task, "description": task.description or ""}
    if isinstance(spec, schedules.CrontabSpec):
        return {**values, "kind": "crontab", **{name: str(getattr(spec, name)) for name in CRONTAB_FIELDS}}
    if isinstance(spec, schedules.IntervalSpec):
        return {**values, "kind": "interval", "every": str(spec.every), "period": spec.period}
    return None


def update_body(values: dict[str, str], task: PeriodicTaskDB) -> dict[str, Any]:
    """The API's PATCH body for the form: what differs from the task. The schedule is sent only
    when it changed, since an inline schedule is stored as a new row (a change of its own)."""
    body = create_body(values)
    body["description"] = values["description"].strip()
    try:
        same = schedule_spec(_schedule_in(values)) == task.get_schedule()
    except (ValidationError, BrokenScheduleError):
        same = False
    if same:
        del body["schedule"]
    return body


def validated_update(values: dict[str, str], task: PeriodicTaskDB) -> tuple[PeriodicTaskUpdate | None, dict[str, str]]:
    try:
        return PeriodicTaskUpdate.model_validate(update_body(values, task)), {}
    except ValidationError as error:
        return None, field_errors(error)


def _schedule_in(values: dict[str, str]) -> IntervalIn | CrontabIn:
    if values["kind"] == "interval":
        return IntervalIn.model_validate(_schedule_body(values))
    return CrontabIn.model_validate(_schedule_body(values))


def _schedule_body(values: dict[str, str]) -> dict[str, Any]:
    if values["kind"] == "interval":
        every: Any = int(values["every"]) if values["every"].strip().isdigit() else values["every"]
        return {"kind": "interval", "every": every, "period": values["period"]}
    return {"kind": "crontab", **{name: values[name].strip() for name in CRONTAB_FIELDS}}


def create_body(values: dict[str, str]) -> dict[str, Any]:
    """The API's request body for the form (`POST /api/v1/admin/periodic-tasks`)."""
    body: dict[str, Any] = {
        "name": values["name"].strip(),
        "task": values["task"].strip(),
        "schedule": _schedule_body(values),
    }
    if values["description"].strip():
        body["description"] = values["description"].strip()
    return body


def field_errors(error: ValidationError) -> dict[str, str]:
    """The schema's messages by form field: a schedule's `minute` is the form's `minute`."""
    errors: dict[str, str] = {}
    for item in error.errors():
        location = [str(part) for part in item["loc"] if str(part) not in ("schedule", *KINDS)]
        name = location[0] if location else "form"
        if name not in DEFAULTS:
            name = "form"
        message = str(item["msg"]).removeprefix("Value error, ")
        errors.setdefault(name, message)
    return errors


def validated(values: dict[str, str]) -> tuple[PeriodicTaskCreate | None, dict[str, str]]:
    try:
        return PeriodicTaskCreate.model_validate(create_body(values)), {}
    except ValidationError as error:
        return None, field_errors(error)


@dataclass
class Preview:
    words: str | None = None
    zone: tzinfo = UTC
    slots: list[PreviewSlot] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def preview(values: dict[str, str], now: datetime | None = None) -> Preview:
    """The schedule in words and its next runs, or why it cannot be used (the API's messages)."""
    try:
        spec_in = _schedule_in(values)
    except ValidationError as error:
        return Preview(errors=field_errors(error))
    spec = schedule_spec(spec_in)
    try:
        schedules.validate(spec)
        first = schedules.first_run_at(spec, now=now or datetime.now(UTC))
        slots = (
            []
            if first is None
            else list(itertools.islice(itertools.chain([first], schedules.slots_after(spec, first)), PREVIEW_COUNT))
        )
    except schedules.ScheduleError as error:
        return Preview(errors={"schedule": str(error)})
    zone: tzinfo = ZoneInfo(spec.timezone) if isinstance(spec, schedules.CrontabSpec) else UTC
    return Preview(words=describe(spec), zone=zone, slots=preview_slots([(slot, slot) for slot in slots], zone))
