"""`/api/v1/admin/periodic-tasks`: superusers manage schedules while beat keeps running."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts.dependencies import SuperuserCaller
from erp.core.celery_app import celery_app
from erp.core.db import DbSession
from erp.core.dispatch import TaskAccepted, off_the_loop
from erp.core.http_errors import ErrorResponse, error_responses, raises
from erp.core.idempotency import REPLAYED_RESPONSE, IdempotencyKey
from erp.core.input_types import DatabaseId, Offset, StoredDateTime, StoredText
from erp.tasks.api import periodic_tasks
from erp.tasks.api.backfill import MAX_BACKFILL, BackfillResult, plan_backfill
from erp.tasks.api.last_runs import last_runs
from erp.tasks.api.ledger_schemas import BackfillIn, BackfillOut, RunAtOut, RunOut, RunPage
from erp.tasks.api.periodic_tasks_schemas import (
    LastRunOut,
    PauseIn,
    PeriodicTaskChangeOut,
    PeriodicTaskCreate,
    PeriodicTaskOut,
    PeriodicTaskPage,
    PeriodicTaskUpdate,
    PreviewRun,
    RunPreview,
    ScheduleOut,
)
from erp.tasks.api.runs import RunCursor, RunFilter, list_runs
from erp.tasks.api.why_not import DEFAULT_TOLERANCE_SECONDS, RunAtAnswer, explain_run_at
from erp.tasks.ledger_kinds import RunState
from erp.tasks.periodic_messages import send_periodic_run
from erp.tasks.scheduler_models import PeriodicTaskDB, PeriodicTaskRunDB, schedule_row_fields

router = APIRouter(prefix="/api/v1/admin/periodic-tasks", tags=["periodic tasks"])

ERRORS = error_responses(401, 403, 404, 422)


def to_out(task: PeriodicTaskDB, last_run: PeriodicTaskRunDB | None = None) -> PeriodicTaskOut:
    row = task.schedule_row
    schedule = ScheduleOut(kind=task.schedule_kind, id=row.id, fields=schedule_row_fields(row))
    return PeriodicTaskOut.model_validate(
        {
            **{column.key: getattr(task, column.key) for column in task.__table__.columns},
            "schedule": schedule,
            "last_run": None if last_run is None else LastRunOut.model_validate(last_run, from_attributes=True),
        }
    )


async def _with_etag(response: Response, task: PeriodicTaskDB, session: DbSession) -> PeriodicTaskOut:
    response.headers["ETag"] = f'"{task.version}"'
    return await periodic_task_out(task, session=session)


async def send_run(task: PeriodicTaskDB, run_id: str, scheduled_at: datetime) -> None:
    """How "run now" sends its message: off the event loop (kombu blocks), within the deadline."""
    await off_the_loop(send_periodic_run, celery_app, task, run_id=run_id, scheduled_at=scheduled_at)


def parse_if_match(if_match: str | None) -> int | None:
    """The version an `If-Match` header names (`"3"`, `W/"3"` or `3`); 400 for anything else."""
    if if_match is None:
        return None
    try:
        return int(if_match.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise HTTPException(400, f'If-Match must be the ETag you read, like "3"; got {if_match!r}') from None


@raises(400)
async def if_match_version(
    if_match: Annotated[str | None, Header(description='the ETag you read, like "3"')] = None,
) -> int | None:
    return parse_if_match(if_match)


IfMatchVersion = Annotated[int | None, Depends(if_match_version)]


@router.get("/task-names", response_model=list[str], summary="Task names a schedule may use", responses=ERRORS)
async def list_task_names(caller: SuperuserCaller) -> list[str]:
    return periodic_tasks.registered_task_names()


@router.get("", response_model=PeriodicTaskPage, summary="List periodic tasks", responses=ERRORS)
async def list_periodic_tasks(
    caller: SuperuserCaller,
    session: DbSession,
    enabled: bool | None = None,
    task: Annotated[StoredText | None, Query(max_length=200, description="exact task name")] = None,
    name: Annotated[StoredText | None, Query(max_length=200, description="part of the name, any case")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> PeriodicTaskPage:
    rows, total = await periodic_tasks.list_periodic_tasks(
        session=session, enabled=enabled, task=task, name=name, limit=limit, offset=offset
    )
    return await periodic_task_page(rows, total, limit, offset, session=session)


async def periodic_task_page(
    rows: list[PeriodicTaskDB], total: int, limit: int, offset: int, *, session: AsyncSession
) -> PeriodicTaskPage:
    # The last outcome of every row of the page: one query, not one per row.
    last = await last_runs([row.id for row in rows], session=session)
    return PeriodicTaskPage(
        items=[to_out(row, last.get(row.id)) for row in rows], total=total, limit=limit, offset=offset
    )


async def periodic_task_out(task: PeriodicTaskDB, *, session: AsyncSession) -> PeriodicTaskOut:
    """The task as the API answers it, with its latest occurrence."""
    last = await last_runs([task.id], session=session)
    return to_out(task, last.get(task.id))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PeriodicTaskOut,
    summary="Create a periodic task",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_periodic_task(
    data: PeriodicTaskCreate, caller: SuperuserCaller, session: DbSession, response: Response
) -> PeriodicTaskOut:
    task = await periodic_tasks.create_periodic_task(data, caller, session=session)
    response.headers["Location"] = f"{router.prefix}/{task.id}"
    return await _with_etag(response, task, session)


@router.get(
    "/{periodic_task_id}",
    response_model=PeriodicTaskOut,
    summary="Get a periodic task (ETag: its version)",
    responses=ERRORS,
)
async def get_periodic_task(
    periodic_task_id: DatabaseId, caller: SuperuserCaller, session: DbSession, response: Response
) -> PeriodicTaskOut:
    return await _with_etag(
        response, await periodic_tasks.get_periodic_task(periodic_task_id, session=session), session
    )


@router.patch(
    "/{periodic_task_id}",
    response_model=PeriodicTaskOut,
    summary="Change a periodic task (send If-Match or `version`)",
    description="The version you read must still be current, or the answer is 409 and nothing changes. "
    'Send it as `If-Match: "<version>"` (the ETag) or as `version` in the body.',
    responses={
        **error_responses(401, 403, 404, 409, 422),
        428: {"model": ErrorResponse, "description": "neither If-Match nor version given"},
    },
)
async def update_periodic_task(
    periodic_task_id: DatabaseId,
    data: PeriodicTaskUpdate,
    caller: SuperuserCaller,
    session: DbSession,
    response: Response,
    expected: IfMatchVersion,
) -> PeriodicTaskOut:
    if expected is None:
        expected = data.version
    if expected is None:
        raise HTTPException(
            428, "send the version you read, as If-Match or as `version`, so no one's change is overwritten"
        )
    task = await periodic_tasks.update_periodic_task(periodic_task_id, data, expected, caller, session=session)
    return await _with_etag(response, task, session)


@router.delete(
    "/{periodic_task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a periodic task",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def delete_periodic_task(
    periodic_task_id: DatabaseId, caller: SuperuserCaller, session: DbSession, expected: IfMatchVersion
) -> Response:
    await periodic_tasks.delete_periodic_task(periodic_task_id, expected, caller, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{periodic_task_id}/enable", response_model=PeriodicTaskOut, summary="Enable a periodic task", responses=ERRORS
)
async def enable_periodic_task(
    periodic_task_id: DatabaseId, caller: SuperuserCaller, session: DbSession, response: Response
) -> PeriodicTaskOut:
    return await _with_etag(
        response, await periodic_tasks.set_enabled(periodic_task_id, True, caller, session=session), session
    )


@router.post(
    "/{periodic_task_id}/disable", response_model=PeriodicTaskOut, summary="Disable a periodic task", responses=ERRORS
)
async def disable_periodic_task(
    periodic_task_id: DatabaseId, caller: SuperuserCaller, session: DbSession, response: Response
) -> PeriodicTaskOut:
    return await _with_etag(
        response, await periodic_tasks.set_enabled(periodic_task_id, False, caller, session=session), session
    )


@router.post(
    "/{periodic_task_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Run a periodic task now, with its own options; counted",
    responses={**error_responses(401, 403, 404, 422, 503), **REPLAYED_RESPONSE},
)
async def run_periodic_task(
    periodic_task_id: DatabaseId,
    caller: SuperuserCaller,
    session: DbSession,
    request: Request,
    idempotency: IdempotencyKey,
) -> TaskAccepted:
    async def run_now() -> TaskAccepted:
        message_id = await periodic_tasks.run_periodic_task_now(periodic_task_id, caller, send_run, session=session)
        return TaskAccepted.for_task(request, message_id)

    return await idempotency.once(caller, TaskAccepted, run_now)


@router.get("/{periodic_task_id}/preview", response_model=RunPreview, summary="The next N run times", responses=ERRORS)
async def preview_runs(
    periodic_task_id: DatabaseId,
    caller: SuperuserCaller,
    session: DbSession,
    count: Annotated[int, Query(ge=1, le=periodic_tasks.MAX_PREVIEW)] = 10,
) -> RunPreview:
    runs = await periodic_tasks.preview_runs(periodic_task_id, count, session=session)
    return RunPreview(
        next_runs=[slot for slot, _ in runs], runs=[PreviewRun(scheduled_at=slot, due_at=due) for slot, due in runs]
    )


@router.post(
    "/{periodic_task_id}/pause",
    response_model=PeriodicTaskOut,
    summary="Pause a periodic task, saying why: its occurrences are recorded as skipped (paused)",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def pause_periodic_task(
    periodic_task_id: DatabaseId, data: PauseIn, caller: SuperuserCaller, session: DbSession, response: Response
) -> PeriodicTaskOut:
    task = await periodic_tasks.pause_periodic_task(periodic_task_id, data.note, caller, session=session)
    return await _with_etag(response, task, session)


@router.post(
    "/{periodic_task_id}/resume",
    response_model=PeriodicTaskOut,
    summary="Resume a paused periodic task (its count of failures in a row starts again from zero)",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def resume_periodic_task(
    periodic_task_id: DatabaseId, caller: SuperuserCaller, session: DbSession, response: Response
) -> PeriodicTaskOut:
    task = await periodic_tasks.resume_periodic_task(periodic_task_id, caller, session=session)
    return await _with_etag(response, task, session)


@router.post(
    "/{periodic_task_id}/backfill",
    response_model=BackfillOut,
    summary=f"Run the occurrences of a past range (at most {MAX_BACKFILL}), each with its own slot",
    description="Slots the ledger already holds (ran, running, skipped) are not run again. "
    "Beat sends the planned ones at once.",
    responses=ERRORS,
)
async def backfill(
    periodic_task_id: DatabaseId, data: BackfillIn, caller: SuperuserCaller, session: DbSession
) -> BackfillOut:
    return backfill_out(await plan_backfill(periodic_task_id, data.start, data.end, session=session))


def backfill_out(result: BackfillResult) -> BackfillOut:
    return BackfillOut(
        planned=result.planned,
        already_recorded=result.already_recorded,
        first_slot=result.first_slot,
        last_slot=result.last_slot,
    )


@router.get(
    "/{periodic_task_id}/runs",
    response_model=RunPage,
    summary="Occurrences of a periodic task in the run ledger, newest first",
    responses=ERRORS,
)
async def list_task_runs(
    periodic_task_id: DatabaseId,
    caller: SuperuserCaller,
    session: DbSession,
    state: Annotated[list[RunState] | None, Query(description="repeat to ask for several")] = None,
    start: Annotated[StoredDateTime | None, Query(alias="from", description="slots from (inclusive)")] = None,
    end: Annotated[StoredDateTime | None, Query(alias="to", description="slots before (exclusive)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[Offset, Query()] = 0,
    before: RunsBefore = None,
) -> RunPage:
    cursor = run_cursor(before)
    await periodic_tasks.get_periodic_task(periodic_task_id, session=session)  # 404 for an unknown task
    run_filter = RunFilter(periodic_task_id=periodic_task_id, states=state or (), start=start, end=end)
    rows, has_more = await list_runs(run_filter, session=session, limit=limit, offset=offset, before=cursor)
    return RunPage.of(rows, limit, offset, has_more)


def run_cursor(before: str | None) -> RunCursor | None:
    """The `before` query parameter of a runs page (a wrong one: 422, naming it)."""
    return None if before is None else RunCursor.parse(before)


RunsBefore = Annotated[
    StoredText | None,
    Query(max_length=100, description="the `next_before` of the page before (keyset paging: quick at any depth)"),
]


@router.get(
    "/{periodic_task_id}/runs/at",
    response_model=RunAtOut,
    summary="What happened at a time: its occurrence, or why there is none",
    description="The ledger row of the slot at `time` (or the nearest slot within `tolerance_seconds`); "
    "if there is none, the reasons, from the task's state at that time (change log, pauses, start and "
    "expiry, its schedule's slots, the ledger's retention).",
    responses=ERRORS,
)
async def run_at(
    periodic_task_id: DatabaseId,
    caller: SuperuserCaller,
    session: DbSession,
    time: Annotated[StoredDateTime, Query(description="the moment asked about, with a UTC offset")],
    tolerance_seconds: Annotated[int, Query(ge=0, le=3600)] = DEFAULT_TOLERANCE_SECONDS,
) -> RunAtOut:
    if time.tzinfo is None:
        raise HTTPException(422, "time needs a UTC offset, e.g. 2030-01-01T09:00:00Z")
    return run_at_out(await explain_run_at(periodic_task_id, time, tolerance_seconds, session=session))


def run_at_out(answer: RunAtAnswer) -> RunAtOut:
    return RunAtOut(
        time=answer.time,
        run=None if answer.run is None else RunOut.model_validate(answer.run, from_attributes=True),
        reasons=answer.reasons,
        explanation=answer.explanation,
        nearest_slots=answer.nearest_slots,
    )


@router.get(
    "/{periodic_task_id}/changes",
    response_model=list[PeriodicTaskChangeOut],
    summary="Who changed what, newest first",
    responses=ERRORS,
)
async def list_changes(
    periodic_task_id: DatabaseId,
    caller: SuperuserCaller,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> list[PeriodicTaskChangeOut]:
    rows = await periodic_tasks.list_changes(periodic_task_id, session=session, limit=limit, offset=offset)
    return [PeriodicTaskChangeOut.model_validate(row, from_attributes=True) for row in rows]
