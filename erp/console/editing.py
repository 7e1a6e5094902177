"""Creating and changing a schedule from the console: the form's fields as the API's request
body, and the preview of an unsaved schedule from the calendar beat uses.

The body is validated by the API's own schema (`PeriodicTaskCreate`, `PeriodicTaskUpdate`) and
saved by its own service, so the console accepts exactly what the API accepts and says why it
refuses with the API's words, each message at the field it is about. The form only turns its
text into the JSON the API takes: a number field holding digits becomes a number, a JSON field
is decoded (a field that is not JSON is the one message of the console's own), an empty field is
left out of a new schedule and cleared (null) in a change. The preview walks the schedule's
slots the way a task's first run and its successors are computed when it is saved
(`first_run_at`, then `slots_from`, with its start time, expiry and one-off flag).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, TypeAdapter, ValidationError

from erp.console.views import PreviewSlot, preview_slots
from erp.tasks.api.periodic_tasks_schemas import (
    ClockedIn,
    CrontabIn,
    IntervalIn,
    PeriodicTaskCreate,
    PeriodicTaskUpdate,
    ScheduleIn,
    SolarIn,
    schedule_spec,
)
from erp.tasks.calendar import schedules
from erp.tasks.calendar.words import describe
from erp.tasks.scheduler_models import BrokenScheduleError, PeriodicTaskDB

PREVIEW_COUNT = 10
Model = TypeVar("Model", bound=BaseModel)
# The API's inline schedule: one of four kinds, told apart by `kind`.
SCHEDULE_IN: TypeAdapter[IntervalIn | CrontabIn | ClockedIn | SolarIn] = TypeAdapter(ScheduleIn)
KINDS = ("crontab", "interval", "clocked", "solar")
SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "crontab": ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone"),
    "interval": ("every", "period"),
    "clocked": ("clocked_time",),
    "solar": ("event", "latitude", "longitude"),
}
# The task's other fields, by how the form's text becomes the API's value.
JSON_FIELDS = ("args", "kwargs", "headers")
NUMBER_FIELDS = (
    "priority",
    "expire_seconds",
    "jitter_seconds",
    "start_deadline_seconds",
    "finish_deadline_seconds",
    "auto_pause_after_failures",
)
TEXT_FIELDS = ("queue", "exchange", "routing_key", "expires", "start_time", "misfire_policy", "overlap_policy")
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
    "clocked_time": "",
    "event": "sunrise",
    "latitude": "",
    "longitude": "",
    "args": "[]",
    "kwargs": "{}",
    "headers": "",
    "queue": "",
    "exchange": "",
    "routing_key": "",
    "priority": "",
    "expires": "",
    "expire_seconds": "",
    "one_off": "repeatedly",
    "start_time": "",
    "misfire_policy": "run_once",
    "overlap_policy": "allow",
    "jitter_seconds": "0",
    "start_deadline_seconds": "",
    "finish_deadline_seconds": "",
    "auto_pause_after_failures": "",
}
# Where a refusal of the service (not of the schema) is shown, by the word its message starts with.
SERVICE_ERROR_FIELDS = {"task": "task", "routing": "routing", "schedule": "schedule"}


RUNS = ("repeatedly", "once")  # the `one_off` field: a choice, so that a form always sends it


def form_values(params: Any, base: dict[str, str] | None = None) -> dict[str, str]:
    """The form's fields (from a query string or a posted form); a field missing is `base`'s
    (a saved task's values), else the empty form's."""
    given = base or DEFAULTS
    return {name: str(params.get(name, given[name]))[:20_000] for name in DEFAULTS}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def values_of(task: PeriodicTaskDB) -> dict[str, str] | None:
    """The form's fields for a saved task; None for a row whose schedule cannot be read (beat
    disabled it): that one is mended through the API."""
    try:
        spec = task.get_schedule()
    except BrokenScheduleError:
        return None
    values = {**DEFAULTS, "name": task.name, "task": task.task, "description": task.description or ""}
    for name in (*JSON_FIELDS, *NUMBER_FIELDS, *TEXT_FIELDS):
        values[name] = _text(getattr(task, name))
    values["one_off"] = RUNS[task.one_off]
    kind = task.schedule_kind
    values["kind"] = kind
    for name in SCHEDULE_FIELDS[kind]:
        values[name] = _text(getattr(spec, name))
    return values


def _schedule_body(values: dict[str, str]) -> dict[str, Any]:
    kind = values["kind"]
    body: dict[str, Any] = {"kind": kind}
    for name in SCHEDULE_FIELDS.get(kind, ()):
        text = values[name].strip()
        body[name] = int(text) if name == "every" and text.isdigit() else text
    return body


def _schedule_in(values: dict[str, str]) -> IntervalIn | CrontabIn | ClockedIn | SolarIn:
    return SCHEDULE_IN.validate_python(_schedule_body(values))


def _number(text: str) -> int | str:
    return int(text) if text.isdigit() and len(text) < 19 else text


def body_of(values: dict[str, str], *, clearing: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's request body for the form, and the fields that are not JSON where JSON is due.

    An empty field is null: in a new schedule that is the same as leaving it out, and it is
    left out; in a change (`clearing`) it clears the field, or, where the field cannot be empty,
    the API says so at the field."""
    body: dict[str, Any] = {
        "name": values["name"].strip(),
        "task": values["task"].strip(),
        "schedule": _schedule_body(values),
        "description": values["description"].strip(),
        "one_off": values["one_off"] == "once" if values["one_off"] in RUNS else values["one_off"],
    }
    errors: dict[str, str] = {}
    for name in JSON_FIELDS:
        text = values[name].strip()
        try:
            body[name] = json.loads(text) if text else None
        except ValueError as error:
            errors[name] = f"not JSON: {error}"
    for name in NUMBER_FIELDS:
        body[name] = _number(values[name].strip()) if values[name].strip() else None
    for name in TEXT_FIELDS:
        body[name] = values[name].strip() or None
    if not clearing:
        body = {name: value for name, value in body.items() if value not in (None, "")}
    for name in errors:
        body.pop(name, None)
    return body, errors


def create_body(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's request body for the form (`POST /api/v1/admin/periodic-tasks`)."""
    return body_of(values, clearing=False)


def update_body(values: dict[str, str], task: PeriodicTaskDB) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's PATCH body for the form (the service records only what differs). The schedule
    is sent only when it changed, since an inline schedule is stored as a new row (a change of
    its own)."""
    body, errors = body_of(values, clearing=True)
    try:
        same = schedule_spec(_schedule_in(values)) == task.get_schedule()
    except (ValidationError, BrokenScheduleError):
        same = False
    if same:
        del body["schedule"]
    return body, errors


def field_errors(error: ValidationError) -> dict[str, str]:
    """The schema's messages by form field: a schedule's `minute` is the form's `minute`."""
    errors: dict[str, str] = {}
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        location = [part for part in parts if part not in ("schedule", *KINDS)]
        # No place left: the union's tag itself (an unknown kind), or the whole body.
        name = location[0] if location else ("kind" if item["type"].startswith("union_tag") else "form")
        if name not in DEFAULTS:
            name = "form"
        message = str(item["msg"]).removeprefix("Value error, ")
        errors.setdefault(name, message)
    return errors


def service_error_field(message: str) -> str:
    """The field a refusal of the service is about (its message names it first)."""
    first = message.split(" ", 1)[0].rstrip(":")
    return SERVICE_ERROR_FIELDS.get(first, "form")


def _validated(model: type[Model], body: dict[str, Any], errors: dict[str, str]) -> tuple[Model | None, dict[str, str]]:
    try:
        data = model.model_validate(body)
    except ValidationError as error:
        return None, {**field_errors(error), **errors}
    return (None, errors) if errors else (data, {})


def validated(values: dict[str, str]) -> tuple[PeriodicTaskCreate | None, dict[str, str]]:
    return _validated(PeriodicTaskCreate, *create_body(values))


def validated_update(values: dict[str, str], task: PeriodicTaskDB) -> tuple[PeriodicTaskUpdate | None, dict[str, str]]:
    return _validated(PeriodicTaskUpdate, *update_body(values, task))


@dataclass
class Preview:
    words: str | None = None
    zone: tzinfo = UTC
    slots: list[PreviewSlot] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _moment(values: dict[str, str], name: str, errors: dict[str, str]) -> datetime | None:
    """A start time or expiry of the form, as the API reads it (an offset is required)."""
    text = values[name].strip()
    if not text:
        return None
    try:
        data = PeriodicTaskUpdate.model_validate({name: text})
    except ValidationError as error:
        errors.update(field_errors(error))
        return None
    moment: datetime | None = getattr(data, name)
    return moment


def _zone(spec: schedules.ScheduleSpec) -> tzinfo:
    if isinstance(spec, schedules.CrontabSpec):
        return ZoneInfo(spec.timezone)
    if isinstance(spec, schedules.ClockedSpec):
        return spec.clocked_time.tzinfo or UTC  # the offset it was given in
    return UTC


def preview(values: dict[str, str], now: datetime | None = None) -> Preview:
    """The schedule in words and its next runs as beat will fire them, or why it cannot be
    used (the API's messages)."""
    try:
        spec = schedule_spec(_schedule_in(values))
    except ValidationError as error:
        return Preview(errors=field_errors(error))
    errors: dict[str, str] = {}
    start_time, expires = _moment(values, "start_time", errors), _moment(values, "expires", errors)
    if errors:
        return Preview(errors=errors)
    one_off = values["one_off"] == "once"
    try:
        schedules.validate(spec)
        first = schedules.first_run_at(spec, now=now or datetime.now(UTC), start_time=start_time)
        slots = (
            [] if first is None else schedules.slots_from(spec, first, PREVIEW_COUNT, one_off=one_off, expires=expires)
        )
    except schedules.ScheduleError as error:
        return Preview(errors={"schedule": str(error)})
    except OverflowError:
        slots = []
    notes = []
    if one_off:
        notes.append("one-off: it runs once")
    jitter = values["jitter_seconds"].strip()
    if jitter.isdigit() and int(jitter):
        notes.append(f"each run is sent up to {int(jitter)} s after its slot (jitter)")
    zone = _zone(spec)
    return Preview(
        words=describe(spec),
        zone=zone,
        slots=preview_slots([(slot, slot) for slot in slots], zone),
        notes=notes,
    )
