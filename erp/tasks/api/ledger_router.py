"""`/api/v1/admin/runs`, `/api/v1/admin/alerts`, `/api/v1/admin/schedule-load`: the run ledger
across all schedules, the alerts raised from it, and the load the schedules will make."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from erp.accounts.dependencies import SuperuserCaller
from erp.core.db import DbSession
from erp.core.http_errors import error_responses
from erp.core.input_types import DatabaseId, Offset, StoredDateTime
from erp.tasks.api import alerts, forecast, runs
from erp.tasks.api.ledger_schemas import (
    AlertPage,
    DueScheduleOut,
    MinuteSchedulesOut,
    RunPage,
    ScheduleLoadOut,
)
from erp.tasks.api.periodic_tasks_router import RunsBefore, run_cursor
from erp.tasks.ledger_kinds import AlertKind, RunState, SkipReason

router = APIRouter(prefix="/api/v1/admin", tags=["run ledger"])

ERRORS = error_responses(401, 403, 422)


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2030-01-01T09:00:00Z")


@router.get("/runs", response_model=RunPage, summary="Occurrences across all schedules, newest first", responses=ERRORS)
async def list_runs(
    caller: SuperuserCaller,
    session: DbSession,
    state: Annotated[list[RunState] | None, Query(description="repeat to ask for several")] = None,
    skip_reason: Annotated[list[SkipReason] | None, Query(description="repeat to ask for several")] = None,
    late: Annotated[
        bool,
        Query(description="started more than late_after_seconds after it was due (or not yet), or missed a deadline"),
    ] = False,
    late_after_seconds: Annotated[int, Query(ge=0, le=86_400)] = 60,
    failed: Annotated[bool, Query(description="failed ones (added to `state`)")] = False,
    skipped: Annotated[bool, Query(description="skipped ones (added to `state`)")] = False,
    periodic_task_id: DatabaseId | None = None,
    start: Annotated[StoredDateTime | None, Query(alias="from", description="slots from (inclusive)")] = None,
    end: Annotated[StoredDateTime | None, Query(alias="to", description="slots before (exclusive)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[Offset, Query()] = 0,
    before: RunsBefore = None,
) -> RunPage:
    _aware(start, "from")
    _aware(end, "to")
    cursor = run_cursor(before)
    run_filter = runs.RunFilter(
        periodic_task_id=periodic_task_id,
        states=state or (),
        skip_reasons=skip_reason or (),
        start=start,
        end=end,
        late=late,
        late_after_seconds=late_after_seconds,
        failed=failed,
        skipped=skipped,
    )
    rows, has_more = await runs.list_runs(run_filter, session=session, limit=limit, offset=offset, before=cursor)
    return RunPage.of(rows, limit, offset, has_more)


@router.get(
    "/alerts", response_model=AlertPage, summary="Alerts raised from the run ledger, newest first", responses=ERRORS
)
async def list_alerts(
    caller: SuperuserCaller,
    session: DbSession,
    delivered: Annotated[bool | None, Query(description="true: delivered; false: not (yet) delivered")] = None,
    kind: AlertKind | None = None,
    periodic_task_id: DatabaseId | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> AlertPage:
    rows, has_more = await alerts.list_alerts(
        session=session, delivered=delivered, kind=kind, periodic_task_id=periodic_task_id, limit=limit, offset=offset
    )
    return AlertPage.of(rows, limit, offset, has_more)


@router.get(
    "/schedule-load",
    response_model=ScheduleLoadOut,
    summary="Occurrences per minute the enabled schedules will make in a window (at most 24 hours)",
    description="Computed from the schedules' definitions, by slot (jitter not added). `from` is rounded down "
    "and `to` up to whole minutes.",
    responses=ERRORS,
)
async def schedule_load(
    caller: SuperuserCaller,
    session: DbSession,
    start: Annotated[StoredDateTime, Query(alias="from")],
    end: Annotated[StoredDateTime, Query(alias="to")],
    top: Annotated[int, Query(ge=1, le=100, description="how many of the busiest minutes to list")] = 10,
) -> ScheduleLoadOut:
    _aware(start, "from")
    _aware(end, "to")
    if end <= start:
        raise HTTPException(422, "to: must be after from")
    try:
        result = await forecast.forecast(start, end, session=session)
    except forecast.WindowTooLarge as error:
        raise HTTPException(422, f"to: {error}") from None
    return ScheduleLoadOut.of(result, top)


@router.get(
    "/schedule-load/minute",
    response_model=MinuteSchedulesOut,
    summary="The schedules behind one minute of the load forecast",
    description="The enabled, not paused schedules with a slot in the minute holding `at`, computed as "
    "/schedule-load computes its count for that minute.",
    responses=ERRORS,
)
async def schedule_load_minute(
    caller: SuperuserCaller,
    session: DbSession,
    at: StoredDateTime,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many schedules to list")] = 100,
) -> MinuteSchedulesOut:
    _aware(at, "at")
    result = await forecast.schedules_in_minute(at, session=session, limit=limit)
    return MinuteSchedulesOut(
        minute=result.minute,
        occurrences=result.occurrences,
        schedules=result.schedules,
        items=[DueScheduleOut.model_validate(item, from_attributes=True) for item in result.items],
    )
