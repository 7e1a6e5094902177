"""Beat's figures for /metrics, read from the heartbeats every beat writes (erp.tasks.heartbeat)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from erp.core import metrics
from erp.core.db import web_engine
from erp.tasks.scheduler_models import BeatHeartbeatDB

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


async def heartbeat_age_families() -> list[Metric]:
    """Seconds since each beat instance last ticked; alert on the smallest (some beat is ticking)."""
    async with web_engine().connect() as connection:
        now = func.now()
        rows = (
            await connection.execute(
                select(BeatHeartbeatDB.instance, func.extract("epoch", now - BeatHeartbeatDB.last_tick_at))
            )
        ).all()
    return [
        metrics.gauge(
            metrics.BEAT_HEARTBEAT_AGE,
            "Seconds since each beat instance last ticked (rows of stopped beats stay for a day).",
            "instance",
            ((instance, float(age)) for instance, age in rows),
        )
    ]
