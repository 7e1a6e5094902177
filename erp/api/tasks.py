"""Dispatching Celery tasks from async endpoints, and reading, listing and revoking them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from celery import Task
from celery.result import AsyncResult
from fastapi import APIRouter, HTTPException, Query, Request
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from erp.api import task_owners
from erp.api.errors import error_responses
from erp.core import broker
from erp.core.auth import Caller, CurrentCaller
from erp.core.celery_app import celery_app

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])

# Longer than kombu's publish retries (about two seconds, task_publish_retry_policy) and the
# async clients' connect timeout (erp.core.broker.connect); past this the caller gets a 503
# instead of a request that hangs while Redis is away.
BROKER_TIMEOUT_SECONDS = 3.0
ERRORS = error_responses(401, 403, 404, 503)
T = TypeVar("T")


class TaskAccepted(BaseModel):
    task_id: str = Field(examples=["0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11"])
    status_url: str = Field(examples=["/api/v1/tasks/0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11"])

    @classmethod
    def for_task(cls, request: Request, task_id: str) -> TaskAccepted:
        return cls(task_id=task_id, status_url=str(request.url_for("get_task_status", task_id=task_id).path))


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


class TaskList(BaseModel):
    items: list[TaskStatus]


def broker_unavailable(error: BaseException) -> HTTPException:
    return HTTPException(503, f"the task queue is unavailable, try again shortly ({type(error).__name__})")


# What a slow or absent Redis raises, through kombu (OperationalError) or redis-py.
BROKER_ERRORS = (OperationalError, RedisError, OSError, asyncio.TimeoutError)


async def _within_deadline(awaitable: Awaitable[T]) -> T:
    """Await a Redis call; 503 when Redis fails or does not answer in time."""
    try:
        return await asyncio.wait_for(awaitable, BROKER_TIMEOUT_SECONDS)
    except BROKER_ERRORS as error:
        raise broker_unavailable(error) from error


async def _off_the_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking Celery call (results, control, kombu) in the thread pool, with the deadline."""
    return await _within_deadline(run_in_threadpool(fn, *args, **kwargs))


async def send_with_timeout(send: Callable[..., AsyncResult], *args: Any, **options: Any) -> str:
    """Publish through kombu (apply_async, send_task) with any options; returns the task id."""
    task_id = options.pop("task_id", None) or str(uuid.uuid4())
    await _off_the_loop(send, *args, task_id=task_id, **options)
    return task_id


async def dispatch(request: Request, caller: Caller, task: Task, *args: Any, **kwargs: Any) -> TaskAccepted:
    """Send `task` for `caller`, recording who started it; answer with its id and status URL."""
    owner = task_owners.TaskOwner(
        task_id=str(uuid.uuid4()),
        task_name=task.name,
        user_id=caller.user_id,
        organization_id=caller.organization_id,
        created_at=time.time(),
    )
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_SECONDS):
            # The owner first: a status request right after the 202 must not be a 404.
            await task_owners.record_owner(owner)
            await broker.send_task(task, args, kwargs, owner.task_id)
    except BROKER_ERRORS as error:
        # Not queued: drop the owner record (if Redis is gone, it expires with the results).
        with contextlib.suppress(*BROKER_ERRORS):
            await asyncio.wait_for(task_owners.forget_owner(owner), 1)
        raise broker_unavailable(error) from error
    return TaskAccepted.for_task(request, owner.task_id)


def _may_see(caller: Caller, owner: task_owners.TaskOwner) -> bool:
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
        created_at=datetime.fromtimestamp(owner.created_at, timezone.utc) if owner else None,
        # Celery stores date_done as naive UTC.
        finished_at=result.date_done.replace(tzinfo=timezone.utc) if result.date_done else None,
    )
    if state == "PROGRESS":
        status.progress = result.info if isinstance(result.info, dict) else None
    elif state == "SUCCESS":
        status.result = result.result
    elif isinstance(result.result, BaseException):
        error = result.result
        status.error = TaskError(
            type=type(error).__name__,
            message=str(error),
            traceback=result.traceback if show_traceback else None,
        )
    return status


async def _owner_visible_to(caller: Caller, task_id: str) -> task_owners.TaskOwner | None:
    """The task's owner record, or 404/403 when `caller` may not see the task."""
    owner = await _within_deadline(task_owners.get_owner(task_id))
    if owner is None and not caller.is_superuser:
        # Superusers may look at any id (periodic runs sent by beat have no owner record).
        raise HTTPException(404, f"no task {task_id} was started through this API, or its result has expired")
    if owner is not None and not _may_see(caller, owner):
        raise HTTPException(403, "this task was started by another user and organization")
    return owner


async def _status_for(caller: Caller, task_id: str) -> TaskStatus:
    owner = await _owner_visible_to(caller, task_id)
    return await _off_the_loop(_read_status, task_id, owner, caller.is_superuser)


@router.get("", response_model=TaskList, summary="Your recent tasks, newest first", responses=ERRORS)
async def list_my_tasks(caller: CurrentCaller, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> TaskList:
    ids = await _within_deadline(task_owners.recent_task_ids(caller.user_id, limit))
    return TaskList(items=[await _status_for(caller, task_id) for task_id in ids])


@router.get(
    "/{task_id}",
    name="get_task_status",
    response_model=TaskStatus,
    summary="State, progress, result or error of a task",
    responses=ERRORS,
)
async def get_task_status(task_id: uuid.UUID, caller: CurrentCaller) -> TaskStatus:
    return await _status_for(caller, str(task_id))


@router.post(
    "/{task_id}/revoke",
    response_model=TaskStatus,
    status_code=202,
    summary="Revoke a task: a queued task will not run (a running one finishes)",
    responses=ERRORS,
)
async def revoke_task(task_id: uuid.UUID, caller: CurrentCaller) -> TaskStatus:
    status = await _status_for(caller, str(task_id))
    await _off_the_loop(celery_app.control.revoke, str(task_id))
    return status
