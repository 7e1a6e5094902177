"""What the members' pages make of a task's status and of the report schema's refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from erp.console import work
from erp.features.reports.schemas import SalesReportRequest
from erp.tasks.api.task_status import TaskError, TaskStatus


def status(**fields) -> TaskStatus:
    return TaskStatus(
        **{"task_id": "t-1", "task_name": "erp.reports.generate_sales_report", "organization_id": 7, **fields}
    )


def test_a_finished_report_links_to_the_consoles_download_of_its_organization():
    row = work._task_row(status(state="SUCCESS", result={"file_id": 42, "filename": "sales.csv", "rows": 3}))
    assert row.kind == "Sales report" and row.finished and row.percent == 100.0
    assert row.download_path == "/console/work/7/reports/files/42"


def test_a_running_task_shows_its_percent_when_it_has_one_and_no_download():
    importing = work._task_row(
        status(state="PROGRESS", task_name="erp.data_processing.import_sales_orders", progress={"percent": 37.5})
    )
    assert importing.percent == 37.5 and not importing.finished and importing.download_path is None
    writing = work._task_row(status(state="PROGRESS", progress={"stage": "writing", "rows_written": 10}))
    assert writing.percent is None  # a report knows no total: the bar is indeterminate


def test_a_failed_task_is_finished_without_a_bar_or_download():
    row = work._task_row(status(state="FAILURE", error=TaskError(type="ValueError", message="bad")))
    assert row.finished and row.percent is None and row.download_path is None


def test_a_task_of_another_kind_is_named_by_its_task_name():
    assert work._task_row(status(state="PENDING", task_name="erp.ping")).kind == "erp.ping"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"date_from": "2026-11-30", "date_to": "2026-11-01"}, "date_to", "date_from 2026-11-30 is after date_to"),
        ({"date_to": "2026-11-01"}, "date_from", "Field required"),
        ({"date_from": "2026-11-01", "date_to": "2026-11-02", "format": "pdf"}, "format", "'csv' or 'xlsx'"),
    ],
)
def test_the_schemas_refusals_are_told_at_their_fields(body, field, message):
    with pytest.raises(ValidationError) as refused:
        SalesReportRequest.model_validate(body)
    errors = work._report_errors(refused.value)
    assert message in errors[field] and not errors[field].startswith("Value error")
