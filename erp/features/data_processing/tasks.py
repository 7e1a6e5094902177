"""The import task: a plain synchronous Celery task calling the async import through the bridge.

The web process imports this module to dispatch the task, and only that: the import pipeline
the task runs is the worker's, imported when the task first runs, so the web never loads it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery import Task
from celery.signals import task_revoked
from sqlalchemy import func, update

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.db import worker_sync_engine
from erp.core.errors import error_text
from erp.core.progress import progress_reporter
from erp.core.retries import RETRY_ON_TRANSIENT_ERRORS, TransientError, retry_transient_errors
from erp.core.running_limits import limit_running
from erp.features.data_processing.models import DataImportDB

logger = logging.getLogger(__name__)


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


def revoked_reason(*, terminated: bool, expired: bool) -> str:
    if expired:
        return "its task expired before it ran: nothing was imported; upload the file again to import it"
    if terminated:
        return "its task was revoked while it ran: the chunks committed before are kept"
    return "its task was revoked before it ran: nothing was imported; upload the file again to import it"


@task_revoked.connect
def _import_revoked(
    sender: Task | None = None, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any
) -> None:
    """A revoked import is failed with the reason; it would otherwise stay `queued` for ever.

    The worker that receives a revoked message drops it without running the task (Celery's
    revoke), so no task body ever writes the import's outcome: this signal is the only place
    that sees it. It runs in the worker's main process, on that process's synchronous engine.
    """
    if getattr(sender, "name", None) != import_sales_orders.name or request is None or not request.args:
        return
    import_id = request.args[0]
    reason = revoked_reason(terminated=terminated, expired=expired)
    with worker_sync_engine().begin() as connection:
        connection.execute(
            update(DataImportDB)
            .where(DataImportDB.id == import_id, DataImportDB.status.in_(("queued", "running")))
            .values(status="failed", error=reason, finished_at=func.now())
        )
    logger.info(
        "data import %s: %s",
        import_id,
        reason,
        extra={"action": "data_import.revoked", "import_id": import_id, "task_id": request.id},
    )


limit_running(import_sales_orders.name, kind="import", setting="DATA_IMPORT_MAX_RUNNING_PER_ORGANIZATION")
