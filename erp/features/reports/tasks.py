from __future__ import annotations

from typing import Any

from celery import Task

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.progress import progress_reporter
from erp.core.retries import RETRY_ON_TRANSIENT_ERRORS, retry_transient_errors
from erp.core.running_limits import limit_running
from erp.features.reports import service


@celery_app.task(bind=True, name="erp.reports.generate_sales_report", **RETRY_ON_TRANSIENT_ERRORS)
def generate_sales_report(self: Task, organization_id: int, parameters: dict[str, Any]) -> dict[str, Any]:
    """Aggregate, write and store a sales report; the result has its download URL.

    Bad parameters raise InvalidReportParameters (not retried: the task fails at once with the
    message). A lost database or broker connection is retried with backoff; each attempt runs
    in one transaction, so a failed attempt leaves no file behind.
    """
    with retry_transient_errors():
        return run_service(service.generate_sales_report, organization_id, parameters, progress=progress_reporter(self))


limit_running(generate_sales_report.name, kind="report", setting="REPORT_MAX_RUNNING_PER_ORGANIZATION")
