"""Progress of a long task, shown by `GET /api/v1/tasks/{task_id}` (state PROGRESS, its meta).

Services run on the bridge's event loop thread (erp.core.bridge), where Celery's `self.request`
(thread-local) is empty, so `self.update_state()` there would not know its task. The task body
makes the reporter in its own thread (`progress_reporter(self)`), binding the task id and
request, and passes it to the service as a plain callable:

    @celery_app.task(bind=True)
    def import_file(self, import_id):
        return run_service(import_rows, import_id, progress=progress_reporter(self))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Task

Progress = Callable[[dict[str, Any]], None]

# At most this many PROGRESS writes per second: a status reader needs no more, Redis no more.
MIN_INTERVAL_SECONDS = 0.2


def progress_reporter(task: Task, min_interval: float = MIN_INTERVAL_SECONDS) -> Progress:
    """A callable storing `meta` as the task's PROGRESS state, from any thread, throttled."""
    request = task.request
    task_id = request.id
    last_written = [float("-inf")]

    def report(meta: dict[str, Any]) -> None:
        now = time.monotonic()
        if task_id is None or now - last_written[0] < min_interval:
            return  # not running as a task (called directly), or written a moment ago
        last_written[0] = now
        task.backend.store_result(task_id, meta, "PROGRESS", request=request)

    return report


def no_progress(meta: dict[str, Any]) -> None:
    """For callers that do not report progress (the demo, tests calling a service directly)."""
