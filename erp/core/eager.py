"""Eager mode (`CELERY_TASK_ALWAYS_EAGER`): a task queued in this process runs in it, at once.

For local development without a worker, and for tests. Celery's own `task_always_eager` makes
`apply_async` call `apply()` in the caller's thread, which is not enough here:

- Endpoints do not queue through `apply_async`: `erp.core.broker.send_task` writes the message
  itself, with redis.asyncio. In eager mode it runs the task here instead (`run_from_the_loop`).
- A task body waits for its service with `run_service`, `async_to_sync` pointed at the bridge's
  loop (erp.core.bridge). In a thread that runs an event loop (the web's, for an endpoint and
  the services it calls) asgiref refuses that, and waiting there for a loop would block it. So
  a task queued from a thread with a running loop runs in a thread of its own: awaited by an
  async caller (`send_task`), waited for by a synchronous one (`task.delay()` inside async
  code, which then blocks its loop for as long as the task runs, in development only).
- A task queued from inside a service (its task already in `run_service`, on the bridge's loop)
  would be a nested run_service, waiting on the loop the service holds. It runs right after
  that service has ended (`erp.core.bridge.after_service`), in the same thread, with a session
  of its own, as a worker would run it after the message was sent; the caller gets its id.
- One eager task at a time per process, as in a prefork child or a solo worker: the bridge's
  pool holds two connections, and Celery's current task of an async def task is kept per loop
  thread. A task queued by a running task's body runs inside it (the lock is re-entrant).
- The result is stored in the result backend (`task_store_eager_result`), so
  `GET /api/v1/tasks/{id}` reads it as it reads a worker's. A failure is stored, not raised in
  the caller (`task_eager_propagates` stays off): an endpoint still answers 202.

What eager mode does not give (the README says it too): beat and periodic runs, late acks and
redelivery, time limits (nothing interrupts the caller's thread), the countdown of retries
(a retry runs at once), the isolation of a prefork child, and the JSON round trip of results.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Mapping
from typing import Any

from celery import Task
from celery.result import AsyncResult, EagerResult
from kombu import serialization

from erp.core import bridge

logger = logging.getLogger(__name__)

# One eager task at a time in this process; re-entrant for a task queued by a running task's body.
_one_at_a_time = threading.RLock()


def is_eager(task: Task) -> bool:
    """Whether tasks of `task`'s app run eagerly (Celery's `task_always_eager`, from the settings)."""
    return bool(task._get_app().conf.task_always_eager)


def _as_sent(task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments as a worker would receive them, through the JSON of a message, so a value
    that cannot be sent fails here as it would when published."""
    if task.typing:
        task.__header__(*args, **kwargs)  # a TypeError now, as apply_async raises it
    content_type, encoding, data = serialization.dumps((list(args), dict(kwargs)), "json")
    sent_args, sent_kwargs = serialization.loads(data, content_type, encoding, accept=[content_type])
    return tuple(sent_args), dict(sent_kwargs)


# Whether this process has said, once, that it runs tasks itself (a log reader should know).
_announced = False


def _apply(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], task_id: str, options: dict[str, Any]) -> Any:
    global _announced
    with _one_at_a_time:
        if not _announced:
            _announced = True
            logger.warning(
                "eager mode (CELERY_TASK_ALWAYS_EAGER): tasks run in this process, not on a worker",
                extra={"action": "eager_mode"},
            )
        logger.debug("eager: running %s[%s] in this process", task.name, task_id, extra={"action": "eager_run"})
        return task.apply(args, kwargs, task_id=task_id, **options)


def _in_a_thread_of_its_own(
    task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], task_id: str, options: dict[str, Any]
) -> Any:
    """Run the task in a new thread and wait for it (the caller's thread runs an event loop)."""
    context = contextvars.copy_context()  # the log context (request id) goes with the task
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = context.run(_apply, task, args, kwargs, task_id, options)
        except BaseException as error:  # handed to the caller, raised in its thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"erp-eager-{task.name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _thread_runs_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def apply_now(
    task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any], task_id: str, **options: Any
) -> AsyncResult:
    """Run `task(*args, **kwargs)` in this process for a synchronous caller (`apply_async`).

    From a plain thread: at once, in that thread. From a thread running an event loop: in a
    thread of its own, waited for. From inside a service: once that service has ended; the
    result returned then is the task's, still PENDING (see the module docstring).
    """
    sent_args, sent_kwargs = _as_sent(task, args, kwargs)
    if bridge.inside_service():
        bridge.after_service(lambda: _apply(task, sent_args, sent_kwargs, task_id, options))
        logger.debug(
            "eager: %s[%s] queued inside a service runs once it has ended",
            task.name,
            task_id,
            extra={"action": "eager_deferred"},
        )
        return task.AsyncResult(task_id)
    if _thread_runs_a_loop():
        result: EagerResult = _in_a_thread_of_its_own(task, sent_args, sent_kwargs, task_id, options)
        return result
    eager_result: EagerResult = _apply(task, sent_args, sent_kwargs, task_id, options)
    return eager_result


async def run_from_the_loop(
    task: Task,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    task_id: str,
    *,
    headers: Mapping[str, Any] | None = None,
) -> None:
    """Run the task for an async caller (`erp.core.broker.send_task`), in a thread beside the
    loop, so the loop goes on serving while the task runs on the bridge's loop.

    Inside a service, as `apply_now`: once the service has ended.
    """
    options: dict[str, Any] = {"headers": dict(headers)} if headers else {}
    if bridge.inside_service():
        apply_now(task, args, kwargs, task_id, **options)
        return
    sent_args, sent_kwargs = _as_sent(task, args, kwargs)
    # asyncio.to_thread carries this context (the request's log fields) into the thread.
    await asyncio.to_thread(_apply, task, sent_args, sent_kwargs, task_id, options)
