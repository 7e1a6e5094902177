"""Liveness and readiness probes: `/health/live` and `/health/ready` (PostgreSQL and Redis).

Anyone may ask them (load balancers, Dokku's checks send no token), so they answer `up` or
`down` per service and nothing more: an error's text names roles, hosts and ports. What went
wrong is logged (`health.check_failed`), for the operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from erp.core.config import get_settings
from erp.core.db import web_engine
from erp.core.errors import error_text

logger = logging.getLogger(__name__)

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


async def _run_check(name: str, check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception as error:  # any failure means "not ready"; the log says which
        reason = (
            f"no answer within {CHECK_TIMEOUT_SECONDS:g} s" if isinstance(error, TimeoutError) else error_text(error)
        )
        logger.warning("health: %s is down: %s", name, reason, extra={"action": "health.check_failed", "service": name})
        return "down"
    return "up"


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="PostgreSQL and Redis answer",
    responses={503: {"description": "a dependency is down; `checks` says which (`up` or `down`; the log says why)"}},
)
async def ready() -> JSONResponse:
    postgresql, redis_state = await asyncio.gather(
        _run_check("postgresql", _check_postgresql), _run_check("redis", _check_redis)
    )
    checks = {"postgresql": postgresql, "redis": redis_state}
    healthy = all(state == "up" for state in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status_code=200 if healthy else 503
    )
