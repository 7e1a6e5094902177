"""What the web reads of the heartbeats beats write: `/health/beat` (did a beat tick recently?)
and, for `/metrics`, the seconds since each beat's last tick."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from erp.core import metrics
from erp.core.config import get_settings
from erp.core.db import web_engine
from erp.tasks.scheduler_models import BeatHeartbeatDB, stale_after_seconds

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/health/beat",
    summary="A beat process ticked recently",
    responses={503: {"description": "no beat has ticked recently"}},
)
async def beat() -> JSONResponse:
    """`up` when some beat ticked recently, else `down`: anyone may ask (no token), so the
    answer names no instance (hosts and process ids); a beat that is down is logged with them,
    and `/metrics` (with its token) has each instance's heartbeat age."""
    stale_after = stale_after_seconds(get_settings().CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS)
    async with web_engine().connect() as connection:
        rows = await beat_instances(connection)
    instances: list[dict[str, Any]] = [
        {
            "instance": row.instance,
            "last_tick_at": row.last_tick_at.isoformat(),
            "seconds_ago": row.seconds_ago,
            "runs_sent": row.runs_sent,
        }
        for row in rows
    ]
    alive = [item for item in instances if item["seconds_ago"] <= stale_after]
    if not alive:
        logger.warning(
            "health: no beat ticked within %s s; beats seen: %s",
            stale_after,
            ", ".join(f"{item['instance']} ({item['seconds_ago']} s ago)" for item in instances) or "none",
            extra={"action": "health.beat_down"},
        )
    body = {"status": "ok" if alive else "unavailable", "beat": "up" if alive else "down"}
    return JSONResponse(body, status_code=200 if alive else 503)


@dataclass(frozen=True)
class BeatInstance:
    instance: str
    last_tick_at: datetime
    seconds_ago: float  # by the database's clock, the one beat's ticks are written with
    runs_sent: int


async def beat_instances(connection: AsyncConnection) -> list[BeatInstance]:
    """Every beat that wrote a heartbeat, the latest tick first (`/health/beat`, the console)."""
    now = (await connection.execute(select(func.now()))).scalar_one()
    rows = (
        await connection.execute(
            select(BeatHeartbeatDB.instance, BeatHeartbeatDB.last_tick_at, BeatHeartbeatDB.runs_sent).order_by(
                BeatHeartbeatDB.last_tick_at.desc()
            )
        )
    ).all()
    return [
        BeatInstance(row.instance, row.last_tick_at, round((now - row.last_tick_at).total_seconds(), 1), row.runs_sent)
        for row in rows
    ]


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
