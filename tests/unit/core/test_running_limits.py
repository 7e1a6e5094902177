"""The declarations of reports and imports under way, and the tasks that declare them."""

from __future__ import annotations

import pytest

from erp.core import running_limits
from erp.core.config import Settings


def test_the_product_s_reports_and_imports_declare_their_running_limits():
    import erp.features.data_processing.tasks
    import erp.features.reports.tasks  # noqa: F401

    report = running_limits.running_limit("erp.reports.generate_sales_report")
    upload = running_limits.running_limit("erp.data_processing.import_sales_orders")
    assert report is not None and report.kind == "report"
    assert upload is not None and upload.kind == "import"
    settings = Settings(DATABASE_URL="postgresql://u@h/db", REPORT_MAX_RUNNING_PER_ORGANIZATION=5)
    assert report.per_organization(settings) == 5
    assert running_limits.running_limit("erp.ping") is None


def test_a_limit_naming_no_setting_is_refused_when_declared():
    with pytest.raises(ValueError, match="'NO_SUCH_SETTING' is not a setting"):
        running_limits.limit_running("erp.example", kind="example", setting="NO_SUCH_SETTING")


def test_a_task_nobody_limited_or_dispatched_takes_no_slot():
    class Task:
        name = "erp.ping"

    assert running_limits._slot_keys(Task(), "some-id") is None
