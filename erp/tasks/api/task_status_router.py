"""`/api/v1/tasks/{task_id}`: the state of a task, and listing and revoking them.

The rules of who may see what are erp.tasks.api.task_status's (the console's members' pages
apply the same): a task's starter, members of the organization it was started in, and
superusers; periodic runs for superusers only. An id in neither is 404 for everyone.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from erp.accounts.dependencies import CurrentCaller
from erp.core.caller import Caller
from erp.core.celery_app import celery_app
from erp.core.dispatch import ERRORS, TASK_STATUS_ROUTE, off_the_loop
from erp.core.http_errors import error_responses
from erp.core.input_types import StoredText
from erp.tasks.api import task_status
from erp.tasks.api.task_status import TaskStatus

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


class TaskList(BaseModel):
    items: list[TaskStatus]
    next_before: str | None = Field(
        None, description="pass as `before` for the next (older) page; null on the last page"
    )


async def _status_for(caller: Caller, task_id: str) -> TaskStatus:
    try:
        return await task_status.task_status(caller, task_id)
    except task_status.TaskHidden as error:
        raise HTTPException(403, str(error)) from None


@router.get(
    "",
    response_model=TaskList,
    summary="Your recent tasks, newest first",
    responses={**ERRORS, **error_responses(422)},
)
async def list_my_tasks(
    caller: CurrentCaller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[
        StoredText | None, Query(max_length=100, description="the `next_before` of the page before (keyset paging)")
    ] = None,
) -> TaskList:
    page = await task_status.my_tasks(caller, limit, before)  # a wrong `before` is a 422
    return TaskList(items=page.items, next_before=page.next_before)


@router.get(
    "/{task_id}",
    name=TASK_STATUS_ROUTE,
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
    await off_the_loop(celery_app.control.revoke, str(task_id))
    return status
