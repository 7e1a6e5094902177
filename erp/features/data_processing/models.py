"""Data imports and the rows they could not import.

An import's counters and `resume_after_line` are written in the same transaction as the
orders of each chunk, so after a crash they say exactly what is in the database, and a
redelivered task carries on after `resume_after_line`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

# The tables the foreign keys point to must be in the metadata of every process that writes
# these rows; a worker imports only its task modules, not erp.models.
from erp.accounts import models as accounts_models  # noqa: F401
from erp.core import files as files_models  # noqa: F401  (data_imports.file_id)
from erp.core.db import Base

STATUSES = ("queued", "running", "done", "failed")


class DataImportDB(Base):
    __tablename__ = "data_imports"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES}", name="status_known"),
        # The members' list pages an organization's imports newest first by id (keyset): one
        # range of this index per page, however many imports the table holds. It serves the
        # organization's own lookups (the foreign key's cascade) too, so it replaces the index
        # on organization_id alone (migration 0008).
        Index("ix_data_imports_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32))  # "sales_orders"
    # The uploaded file; NULL once it has been pruned (FILE_RETENTION_HOURS).
    file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    task_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # Times the task started on this import: more than 1 after a retry or a redelivery.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The last line of the file whose outcome is committed; a redelivered task resumes after it.
    resume_after_line: Mapped[int] = mapped_column(Integer, default=0)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    rows_imported: Mapped[int] = mapped_column(Integer, default=0)
    # Rows of orders that were already in the database (an earlier import of the same data).
    rows_skipped: Mapped[int] = mapped_column(Integer, default=0)
    rows_failed: Mapped[int] = mapped_column(Integer, default=0)
    orders_imported: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DataImportErrorDB(Base):
    """A row that was not imported: its line in the file (1 is the header) and why."""

    __tablename__ = "data_import_errors"
    __table_args__ = (UniqueConstraint("import_id", "line_number"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("data_imports.id", ondelete="CASCADE"))
    line_number: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
