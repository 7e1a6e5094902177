# erp/features/order_audits/tasks.py
"""The worker's part of order audits: found by the worker's task discovery (a `tasks` module)."""

from __future__ import annotations

from typing import Any

from celery import Task

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.progress import progress_reporter
from erp.core.retries import RETRY_ON_TRANSIENT_ERRORS, retry_transient_errors
from erp.features.order_audits import service


@celery_app.task(bind=True, name="erp.order_audits.run_order_audit", **RETRY_ON_TRANSIENT_ERRORS)
def run_order_audit(self: Task, audit_id: int) -> dict[str, Any]:
    """Audit the orders in one session, committed when the service returns.

    A lost connection is retried with back-off (the attempt's work was rolled back); an
    unknown audit fails at once: retrying cannot make it exist.
    """
    with retry_transient_errors():
        return run_service(service.run_audit, audit_id, progress=progress_reporter(self))
