"""Results of the periodic health check (erp.tasks.periodic_health_checks), one row per run.

Kept `HEALTH_CHECK_RETENTION_HOURS`; the check deletes older rows itself, so the table stays
bounded (a run a minute for a week is about 10,000 rows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from erp.core.db import Base


class HealthCheckResultDB(Base):
    __tablename__ = "health_check_results"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    healthy: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[float] = mapped_column(Float)
    # Who ran it: the worker's hostname and process.
    worker: Mapped[str] = mapped_column(String(200))
    # {check name: {"ok": bool, "duration_ms": float, "detail": str, ...check-specific fields}}
    checks: Mapped[dict[str, Any]] = mapped_column(JSONB)
