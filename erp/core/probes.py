"""Liveness and readiness probes: `/health/live` and `/health/ready` (PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from erp.core.config import get_settings
from erp.core.db import web_engine

router = APIRouter(tags=["health"])

# A readiness probe that hangs is worse than one that fails: each check gets this long.
CHECK_TIMEOUT_SECONDS = 2.0


async def _check_postgresql() -> None:
    async with web_engine().connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check_redis() -> None:
    client = redis.Redis.from_url(
        get_settings().broker_url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _run_check(check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"down: no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # any failure means "not ready"; the message says which
        return f"down: {type(error).__name__}: {error}"
    return "ok"


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
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
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status_code=200 if healthy else 503
    )
