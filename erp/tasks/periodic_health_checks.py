"""The periodic health check: is every part of the product working, and how fast does it answer?

A periodic job of the product (declared below the task, every HEALTH_CHECK_INTERVAL_SECONDS;
beat writes it to the table from configuration), so it runs through the whole chain beat ->
broker -> worker -> PostgreSQL; that it runs at all says beat and a worker are alive. Each run
checks

- `postgresql`: a query answers;
- `redis`: the broker's and the result backend's Redis answer PING;
- `queues`: messages waiting in each queue the app knows (kombu keeps one Redis list per
  priority step: all are counted), at most HEALTH_CHECK_MAX_QUEUE_DEPTH each, and how long the
  oldest of each has waited (erp.core.broker.queue_stats, as the console and `/metrics` read it);
- `beat`: a beat wrote its heartbeat recently (the rule of `/health/beat`);
- `workers`: workers answer Celery's control ping within a second;

each with its own timeout and duration, and stores the outcome in `health_check_results`,
deleting results older than HEALTH_CHECK_RETENTION_HOURS in the same transaction. Superusers
read them at `GET /api/v1/admin/health-checks`. `/health/ready` stays a cheap probe and does
not run these: a load balancer calls it far more often than once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import redis.asyncio as redis
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core import broker, broker_wire
from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from erp.core.errors import error_text
from erp.core.task_registry import periodic_job
from erp.tasks.health_check_models import HealthCheckResultDB
from erp.tasks.scheduler_models import BeatHeartbeatDB, stale_after_seconds

logger = logging.getLogger(__name__)

# Each check gets this long; a check that hangs is a failed check, not a stuck health check.
CHECK_TIMEOUT_SECONDS = 3.0
# How long to collect the workers' answers to the control ping.
WORKER_PING_SECONDS = 1.0

CheckResult = dict[str, Any]


async def _timed(check: Callable[[], Awaitable[CheckResult]]) -> CheckResult:
    """Run one check within the timeout: {"ok", "duration_ms", "detail", ...what it found}."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        result = {"ok": False, "detail": f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"}
    except Exception as error:  # any failure is the check's finding; the message says which
        result = {"ok": False, "detail": error_text(error)}
    result["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    result.setdefault("detail", "ok" if result["ok"] else "failed")
    return result


async def check_postgresql(session: AsyncSession) -> CheckResult:
    value = (await session.execute(text("SELECT 1"))).scalar_one()
    return {"ok": value == 1}


async def check_beat(session: AsyncSession) -> CheckResult:
    stale_after = stale_after_seconds(get_settings().CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS)
    row = (
        await session.execute(
            select(BeatHeartbeatDB.instance, (func.now() - BeatHeartbeatDB.last_tick_at).label("age"))
            .order_by(BeatHeartbeatDB.last_tick_at.desc())
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return {"ok": False, "detail": "no beat has ever written a heartbeat"}
    seconds = round(row.age.total_seconds(), 1)
    ok = seconds <= stale_after
    detail = "ok" if ok else f"the latest heartbeat is {seconds} s old (stale after {stale_after:g} s)"
    return {"ok": ok, "detail": detail, "instance": row.instance, "seconds_since_tick": seconds}


def _redis_client(url: str) -> redis.Redis:
    client: redis.Redis = redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    return client


async def check_redis() -> CheckResult:
    settings = get_settings()
    for name, url in (("broker", settings.broker_url), ("result backend", settings.result_backend_url)):
        client = _redis_client(url)
        try:
            await client.ping()
        except Exception as error:
            return {"ok": False, "detail": f"{name}: {error_text(error)}"}
        finally:
            await client.aclose()
    return {"ok": True}


def queue_names() -> list[str]:
    """The queues the app declares (Celery's default `celery` when nothing else is configured)."""
    return sorted({queue.name for queue in celery_app.amqp.queues.values()})


async def check_queues() -> CheckResult:
    limit = get_settings().HEALTH_CHECK_MAX_QUEUE_DEPTH
    names = queue_names()
    client = _redis_client(get_settings().broker_url)
    try:
        stats = await broker.queue_stats(names, client=client)
        unacknowledged = await client.hlen(broker_wire.UNACKED_HASH)  # type: ignore[misc]
    finally:
        await client.aclose()
    depths = {name: queue.depth for name, queue in stats.items()}
    too_deep = {name: depth for name, depth in depths.items() if depth > limit}
    detail = "ok" if not too_deep else f"over {limit} waiting: {too_deep}"
    return {
        "ok": not too_deep,
        "detail": detail,
        "depths": depths,
        "oldest_age_seconds": {name: queue.oldest_age_seconds for name, queue in stats.items()},
        "unacknowledged": unacknowledged,
    }


async def check_workers() -> CheckResult:
    # Celery's control ping is blocking kombu I/O: a thread, not the event loop.
    replies = await asyncio.to_thread(celery_app.control.ping, timeout=WORKER_PING_SECONDS)
    workers = sorted(name for reply in replies for name in reply)
    detail = "ok" if workers else f"no worker answered the control ping within {WORKER_PING_SECONDS:g} s"
    return {"ok": bool(workers), "detail": detail, "workers": workers}


async def run_health_checks(*, session: AsyncSession) -> dict[str, Any]:
    """Run every check (those on their own connections at the same time), store the outcome."""
    started = time.perf_counter()

    async def database_checks() -> tuple[CheckResult, CheckResult]:
        # One session, so one query at a time; the beat check needs PostgreSQL anyway.
        postgresql = await _timed(lambda: check_postgresql(session))
        if not postgresql["ok"]:
            return postgresql, {"ok": False, "detail": "not checked: PostgreSQL is down", "duration_ms": 0.0}
        return postgresql, await _timed(lambda: check_beat(session))

    (postgresql, beat), redis_result, queues, workers = await asyncio.gather(
        database_checks(), _timed(check_redis), _timed(check_queues), _timed(check_workers)
    )
    checks = {"postgresql": postgresql, "redis": redis_result, "queues": queues, "beat": beat, "workers": workers}
    healthy = all(check["ok"] for check in checks.values())
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    outcome: dict[str, Any] = {"healthy": healthy, "duration_ms": duration_ms, "checks": checks, "stored": False}
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    if failing:
        logger.warning(
            "health check: failing %s", ", ".join(failing), extra={"action": "health_check.failed", "failing": failing}
        )
    if not postgresql["ok"]:
        # Nowhere to store it; the log line above and the task's result carry it.
        await session.rollback()
        return outcome
    retention = timedelta(hours=get_settings().HEALTH_CHECK_RETENTION_HOURS)
    await session.execute(
        insert(HealthCheckResultDB).values(
            healthy=healthy, duration_ms=duration_ms, worker=f"{socket.gethostname()}:{os.getpid()}", checks=checks
        )
    )
    await session.execute(delete(HealthCheckResultDB).where(HealthCheckResultDB.checked_at < func.now() - retention))
    outcome["stored"] = True
    return outcome


TASK_NAME = "erp.health_check"


@celery_app.task(name=TASK_NAME)
def health_check() -> dict[str, Any]:
    outcome: dict[str, Any] = run_service(run_health_checks)
    logger.info(
        "periodic health check: healthy=%s in %.0f ms",
        outcome["healthy"],
        outcome["duration_ms"],
        extra={"action": "health_check.done"},
    )
    return outcome


periodic_job(TASK_NAME, every=lambda settings: settings.HEALTH_CHECK_INTERVAL_SECONDS)
