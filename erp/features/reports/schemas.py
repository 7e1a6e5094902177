from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from erp.core.config import get_settings


class Grouping(StrEnum):
    day = "day"
    week = "week"  # ISO weeks, Monday to Sunday
    month = "month"
    customer = "customer"


class ReportFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"


class SalesReportRequest(BaseModel):
    """What a sales report covers and how it is written. Dates are order dates, both included."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"date_from": "2026-01-01", "date_to": "2026-12-31", "group_by": "month", "format": "xlsx"}]
        },
    )

    date_from: date
    date_to: date
    group_by: Grouping = Field(Grouping.month, description="day, week (ISO), month or customer")
    format: ReportFormat = Field(ReportFormat.csv, description="csv or xlsx")

    @field_validator("date_to")
    @classmethod
    def _check_range(cls, date_to: date, info: ValidationInfo) -> date:
        # A longer range is refused (REPORT_MAX_RANGE_DAYS): a report is for reading, not a data
        # export, and its query and file grow with the range.
        date_from = info.data.get("date_from")
        if date_from is None:
            return date_to  # date_from itself was wrong: its own error says so
        if date_from > date_to:
            raise ValueError(f"date_from {date_from} is after date_to {date_to}")
        days = (date_to - date_from).days + 1
        limit = get_settings().REPORT_MAX_RANGE_DAYS
        if days > limit:
            raise ValueError(
                f"the range covers {days} days, more than {limit} (REPORT_MAX_RANGE_DAYS): ask for several reports"
            )
        return date_to
