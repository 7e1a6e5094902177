"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from erp.core.config import settings
from erp.core.db import async_engine
from erp.tasks.db_scheduler import HEARTBEAT_EVERY_SECONDS
from erp.tasks.scheduler_models import BeatHeartbeatDB

router = APIRouter(tags=["health"])

# A readiness probe that hangs is worse than one that fails: each check gets this long.
CHECK_TIMEOUT_SECONDS = 2.0


async def _check_postgresql() -> None:
    async with async_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check_redis() -> None:
    client = redis.Redis.from_url(
        settings.broker_url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _run_check(check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        return f"down: no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # any failure means "not ready"; the message says which
        return f"down: {type(error).__name__}: {error}"
    return "ok"


@router.get("/health/live", summary="The process is up")
async def live() -> dict:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="PostgreSQL and Redis answer",
    responses={503: {"description": "a dependency is down; `checks` names it"}},
)
async def ready() -> JSONResponse:
    postgresql, redis_state = await asyncio.gather(_run_check(_check_postgresql), _run_check(_check_redis))
    checks = {"postgresql": postgresql, "redis": redis_state}
    healthy = all(state == "ok" for state in checks.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": checks}, status_code=200 if healthy else 503)


# Beat writes its heartbeat every few seconds; three missed beats mean it is not ticking.
BEAT_STALE_AFTER_SECONDS = 3 * max(HEARTBEAT_EVERY_SECONDS, settings.CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS)


@router.get(
    "/health/beat",
    summary="A beat process ticked recently",
    responses={503: {"description": "no beat has ticked recently"}},
)
async def beat() -> JSONResponse:
    async with async_engine.connect() as connection:
        rows = (
            await connection.execute(
                select(BeatHeartbeatDB.instance, BeatHeartbeatDB.last_tick_at, BeatHeartbeatDB.runs_sent).order_by(
                    BeatHeartbeatDB.last_tick_at.desc()
                )
            )
        ).all()
        now = (await connection.execute(select(func.now()))).scalar_one()
    instances = [
        {"instance": row.instance, "last_tick_at": row.last_tick_at.isoformat(), "seconds_ago": round((now - row.last_tick_at).total_seconds(), 1), "runs_sent": row.runs_sent}
        for row in rows
    ]
    alive = [item for item in instances if item["seconds_ago"] <= BEAT_STALE_AFTER_SECONDS]
    body = {"status": "ok" if alive else "unavailable", "stale_after_seconds": BEAT_STALE_AFTER_SECONDS, "instances": instances}
    return JSONResponse(body, status_code=200 if alive else 503)
