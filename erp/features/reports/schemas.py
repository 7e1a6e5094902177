from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Longer ranges are refused: a report is for reading, not a data export.
MAX_REPORT_DAYS = 3 * 366 + 1


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

    @model_validator(mode="after")
    def _check_range(self) -> SalesReportRequest:
        if self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")
        if (self.date_to - self.date_from).days + 1 > MAX_REPORT_DAYS:
            raise ValueError(f"the range covers more than {MAX_REPORT_DAYS} days: ask for several reports")
        return self
