"""Dispatching Celery tasks from async endpoints: `dispatch(request, caller, task, *args)`.

It counts the task against the caller's quotas (erp.core.quotas: 429 beyond them), records who
started the task (erp.core.task_owners) and queues it on the event loop
(erp.core.broker), within a deadline, so a missing Redis is a 503 in seconds, not a hung request.
The status, listing and revoking endpoints live with the task subsystem, in the web's part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from fastapi import Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from erp.core import broker, eager, metrics, quotas, request_ids, task_owners
from erp.core.broker_wire import BROKER_ERRORS
from erp.core.caller import Caller

# Re-exported: they were defined here, and routes import them from here.
from erp.core.deadlines import BROKER_TIMEOUT_SECONDS as BROKER_TIMEOUT_SECONDS
from erp.core.deadlines import broker_unavailable as broker_unavailable
from erp.core.deadlines import within_deadline as within_deadline
from erp.core.http_errors import error_responses

# The name of the route that reads a task's status (the task subsystem declares it with this
# name): status_url points there.
TASK_STATUS_ROUTE = "get_task_status"

ERRORS = error_responses(401, 403, 404, 503)
T = TypeVar("T")


class TaskAccepted(BaseModel):
    task_id: str = Field(examples=["0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11"])
    status_url: str = Field(examples=["/api/v1/tasks/0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11"])

    @classmethod
    def for_task(cls, request: Request, task_id: str) -> TaskAccepted:
        return cls(task_id=task_id, status_url=str(request.url_for(TASK_STATUS_ROUTE, task_id=task_id).path))


async def off_the_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking Celery call (results, control, kombu) in the thread pool, with the deadline."""
    return await within_deadline(run_in_threadpool(fn, *args, **kwargs))


async def dispatch(request: Request, caller: Caller, task: Task, *args: Any, **kwargs: Any) -> TaskAccepted:
    """Send `task` for `caller`, recording who started it; answer with its id and status URL."""
    # The caller's rate and running limits (429 beyond them): counted before anything is written.
    admission = await quotas.admit(caller, task.name, str(uuid.uuid4()))
    owner = task_owners.TaskOwner(
        task_id=admission.task_id,
        task_name=task.name,
        user_id=caller.user_id,
        organization_id=caller.organization_id,
        created_at=time.time(),
    )
    # Eager mode runs the task inside send_task: the deadline is Redis', not the task's.
    runs_here = eager.is_eager(task)
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_SECONDS):
            # The owner first: a status request right after the 202 must not be a 404.
            await task_owners.record_owner(owner)
            if not runs_here:
                # The request id goes with the task, into the worker's log lines for it.
                await broker.send_task(task, args, kwargs, owner.task_id, headers=request_ids.task_headers())
        if runs_here:
            await broker.send_task(task, args, kwargs, owner.task_id, headers=request_ids.task_headers())
    except BROKER_ERRORS as error:
        metrics.count_publish_error(task.name)
        # Not queued: drop the owner record (if Redis is gone, it expires with the results).
        with contextlib.suppress(*BROKER_ERRORS):
            await asyncio.wait_for(task_owners.forget_owner(owner), 1)
        await admission.undo()
        raise broker_unavailable(error) from error
    return TaskAccepted.for_task(request, owner.task_id)
