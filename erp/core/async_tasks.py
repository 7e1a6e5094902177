"""`async def` tasks: a coroutine function given to `@celery_app.task` runs through the bridge.

    @celery_app.task(bind=True, name="erp.reports.generate_sales_report")
    async def generate_sales_report(self, report_id: int, *, session: AsyncSession) -> dict:
        ...

Celery 5.3 would call the coroutine function, get a coroutine object and fail to store it
("coroutine was never awaited"). `erp.core.celery_app.ErpTask` gives such a task the
synchronous body made here: it awaits the coroutine on the worker process's loop
(erp.core.bridge), with a fresh session handed in as `session=`, committed when it returns and
rolled back when it raises or its soft time limit fires; retries, `update_state` and the run
ledger's guard work as for any task. The session is the task's only one, so the commit hooks
of erp.core.celery_app run in it: the run ledger records a periodic run's success in the same
transaction as its work.

Refused when the task is declared: a coroutine function without a keyword-only `session`.
Refused when a worker starts: async def tasks on a pool whose tasks share one process's
threads (erp.core.celery_app.POOLS_WITHOUT_ASYNC_TASKS).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from erp.core.bridge import TaskBody, run_task_body

SESSION_PARAMETER = "session"


def async_task_body(fn: Callable[..., Awaitable[Any]], *, bound: bool, task_name: str) -> Callable[..., Any]:
    """The synchronous `run` Celery calls for the coroutine function `fn` of an async def task.

    It awaits `fn(..., session=<fresh AsyncSession>)` through the bridge, as `run_service`
    does, with the commit hooks of `erp.core.celery_app` before the commit. The signature it
    shows Celery (which checks the arguments of `delay` and `apply_async`) is fn's without
    `session`, which callers never pass. Refused here, when the task is declared, with what
    to write instead: a coroutine function that does not take `session` as a keyword argument.
    """
    signature = inspect.signature(fn)
    parameter = signature.parameters.get(SESSION_PARAMETER)
    if parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(
            f"the async def task {task_name!r} must take its database session as a keyword-only argument:"
            f" async def {fn.__name__}(..., *, session: AsyncSession); it is handed a fresh session,"
            " committed when the task returns and rolled back when it raises"
        )
    shown = signature.replace(parameters=[p for p in signature.parameters.values() if p.name != SESSION_PARAMETER])

    def run(*args: Any, **kwargs: Any) -> Any:
        # Imported here: erp.core.celery_app imports this module when a task is declared.
        from celery import current_task

        from erp.core.celery_app import before_commit

        task = args[0] if bound else current_task._get_current_object()
        return run_task_body(fn, args, kwargs, TaskBody(task, task.request, before_commit(task)))

    functools.update_wrapper(run, fn)
    del run.__wrapped__  # type: ignore[attr-defined]  # Celery must see `shown`, not fn
    run.__signature__ = shown  # type: ignore[attr-defined]
    return run
