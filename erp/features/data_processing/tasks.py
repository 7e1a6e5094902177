"""The import task: a plain synchronous Celery task calling the async import through the bridge.

The web process imports this module to dispatch the task, and only that: the import pipeline
the task runs is the worker's, imported when the task first runs, so the web never loads it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Task

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.errors import error_text
from erp.core.progress import progress_reporter
from erp.core.retries import RETRY_ON_TRANSIENT_ERRORS, TransientError, retry_transient_errors
from erp.core.running_limits import limit_running


@celery_app.task(bind=True, name="erp.data_processing.import_sales_orders", **RETRY_ON_TRANSIENT_ERRORS)
def import_sales_orders(self: Task, import_id: int) -> dict[str, Any]:
    """Import an uploaded sales-order CSV; safe to run again (it resumes, never duplicates).

    A lost database or broker connection is retried with backoff (the import resumes after its
    last committed chunk); anything else fails the task and the import at once, with its message.
    """
    from erp.features.data_processing import import_pipeline  # the worker's part (see the docstring)

    try:
        with retry_transient_errors():
            return run_service(import_pipeline.import_sales_orders, import_id, progress=progress_reporter(self))
    except Exception as error:
        retrying = isinstance(error, TransientError) and self.request.retries < self.max_retries
        if not retrying:
            # Best effort: with the database away the import stays "running" until run again.
            with contextlib.suppress(Exception):
                run_service(import_pipeline.record_failure, import_id, error_text(error))
        raise


limit_running(import_sales_orders.name, kind="import", setting="DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION")
