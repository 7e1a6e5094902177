"""The state of a task for a caller, and the caller's recent tasks: the rules of
`/api/v1/tasks` (erp.tasks.api.task_status_router), which the console's members' pages apply too.

Who may see a task comes from its owner record (erp.core.task_owners), written when it was
dispatched: its starter, members of the organization it was started in, and superusers. Its
state comes from Celery's result backend. A task with an owner record is answered from Redis
alone. Periodic runs (sent by beat, "run now" or a backfill) have no owner record: their id is
looked up in the run ledger, and superusers may read them, with a link to their schedule. An id
in neither is NotFoundError for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from celery.result import AsyncResult
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core import task_owners
from erp.core.caller import Caller
from erp.core.celery_app import celery_app
from erp.core.db import web_session_factory
from erp.core.dispatch import off_the_loop, within_deadline
from erp.core.errors import NotFoundError, error_message
from erp.tasks.api import runs
from erp.tasks.scheduler_models import PeriodicTaskRunDB


class TaskError(BaseModel):
    type: str = Field(examples=["ValueError"])
    message: str
    traceback: str | None = Field(None, description="superusers only")


class TaskStatus(BaseModel):
    task_id: str
    state: str = Field(
        examples=["SUCCESS"], description="PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, RETRY or REVOKED"
    )
    task_name: str | None = Field(None, examples=["erp.ping"])
    progress: dict[str, Any] | None = Field(None, description="the meta of the latest PROGRESS update")
    result: Any = None
    error: TaskError | None = None
    created_at: datetime | None = Field(None, description="when it was dispatched through the API")
    finished_at: datetime | None = None
    organization_id: int | None = Field(None, description="the organization it was started in (dispatched tasks)")
    periodic_task_id: int | None = Field(None, description="a periodic run: the schedule it belongs to")
    periodic_task_name: str | None = None
    scheduled_at: datetime | None = Field(None, description="a periodic run: its slot")
    run_state: str | None = Field(None, description="a periodic run: its state in the run ledger")


class TaskHidden(Exception):
    """The task was started by another user, in an organization the caller is not acting in (403)."""


@dataclass(frozen=True)
class TaskPage:
    """A page of the caller's tasks, newest first; `next_before` asks for the page after it."""

    items: list[TaskStatus]
    next_before: str | None


def may_see(caller: Caller, owner: task_owners.TaskOwner) -> bool:
    if caller.is_superuser or owner.user_id == caller.user_id:
        return True
    return owner.organization_id is not None and owner.organization_id == caller.organization_id


def _read_status(task_id: str, owner: task_owners.TaskOwner | None, show_traceback: bool) -> TaskStatus:
    result = AsyncResult(task_id, app=celery_app)
    state = result.state
    status = TaskStatus(
        task_id=task_id,
        state=state,
        task_name=result.name or (owner.task_name if owner else None),
        created_at=datetime.fromtimestamp(owner.created_at, UTC) if owner else None,
        # Celery stores date_done as naive UTC.
        finished_at=result.date_done.replace(tzinfo=UTC) if result.date_done else None,
        organization_id=owner.organization_id if owner else None,
    )
    if state == "PROGRESS":
        status.progress = result.info if isinstance(result.info, dict) else None
    elif state == "SUCCESS":
        status.result = result.result
    elif isinstance(result.result, BaseException):
        error = result.result
        status.error = TaskError(
            type=type(error).__name__,
            message=error_message(error),
            traceback=result.traceback if show_traceback else None,
        )
    return status


@dataclass(frozen=True)
class StatusTools:
    """A session and a Redis client of the caller's own, for a reader outside the web process
    (the command line): the web's pool and client belong to the web's event loop."""

    session: AsyncSession
    redis: redis.Redis


@dataclass(frozen=True)
class _Visible:
    """What a caller may see of a task id: its owner record, or (superusers) its ledger row."""

    owner: task_owners.TaskOwner | None
    run: PeriodicTaskRunDB | None


def _not_found(task_id: str) -> NotFoundError:
    return NotFoundError(f"no task {task_id} was started through this API, or its result has expired")


async def _visible_to(caller: Caller, task_id: str, tools: StatusTools | None) -> _Visible:
    """The task's owner record or ledger row; TaskHidden or NotFoundError when `caller` may not see it."""
    owner = await within_deadline(task_owners.get_owner(task_id, tools.redis if tools else None))
    if owner is not None:
        if not may_see(caller, owner):
            raise TaskHidden("this task was started by another user and organization")
        return _Visible(owner, None)  # Redis alone: no database query for a dispatched task
    if not caller.is_superuser:
        raise _not_found(task_id)
    # Periodic runs have no owner record; an id the ledger does not know is nobody's task.
    if tools is not None:
        run = await runs.run_by_message_id(task_id, session=tools.session)
    else:
        async with web_session_factory()() as session:
            run = await runs.run_by_message_id(task_id, session=session)
    if run is None:
        raise _not_found(task_id)
    return _Visible(None, run)


async def task_status(caller: Caller, task_id: str, tools: StatusTools | None = None) -> TaskStatus:
    """The state, progress, result or error of a task `caller` may see (TaskHidden, NotFoundError)."""
    visible = await _visible_to(caller, task_id, tools)
    status = await off_the_loop(_read_status, task_id, visible.owner, caller.is_superuser)
    if visible.run is not None:
        run = visible.run
        status.task_name = status.task_name or run.task_name
        status.periodic_task_id = run.periodic_task_id
        status.periodic_task_name = run.periodic_task_name
        status.scheduled_at = run.scheduled_at
        status.run_state = run.state
    return status


def parse_cursor(before: str | None) -> task_owners.RecentCursor | None:
    """A page's `next_before` (`<created_at>:<task_id>`), or InvalidCursor."""
    return None if before is None else task_owners.RecentCursor.parse(before)


async def my_tasks(caller: Caller, limit: int, before: str | None = None) -> TaskPage:
    """The tasks `caller` started, newest first, `limit` at a time (keyset: after `before`)."""
    entries = await within_deadline(task_owners.recent_tasks(caller.user_id, limit + 1, parse_cursor(before)))
    items = [await task_status(caller, entry.task_id) for entry in entries[:limit]]
    next_before = entries[limit - 1].text() if len(entries) > limit else None
    return TaskPage(items=items, next_before=next_before)
