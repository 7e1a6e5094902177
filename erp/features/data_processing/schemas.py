from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from erp.core.dispatch import TaskAccepted


class ImportAccepted(TaskAccepted):
    import_id: int
    import_url: str = Field(examples=["/api/v1/organizations/1/imports/7"])


class RowError(BaseModel):
    line_number: int = Field(description="line in the file; line 1 is the header")
    reason: str


class DataImport(BaseModel):
    id: int
    organization_id: int
    kind: str = Field(examples=["sales_orders"])
    filename: str
    size_bytes: int
    status: str = Field(examples=["done"], description="queued, running, done or failed")
    task_id: str | None
    attempts: int = Field(description="times the task started on it: above 1 after a retry or redelivery")
    rows_read: int
    rows_imported: int
    rows_skipped: int = Field(description="rows of orders already present (imported before): not imported again")
    rows_failed: int
    orders_imported: int
    error: str | None = Field(None, description="why the import as a whole failed")
    errors: list[RowError] = Field(
        description="the first failed rows, in line order (see `errors_url` for all; none in a listing)"
    )
    errors_url: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DataImportList(BaseModel):
    items: list[DataImport]
    next_before: int | None = Field(
        None, description="pass as `before` for the next (older) page; null on the last page"
    )
