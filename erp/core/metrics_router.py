"""`GET /metrics`: every figure of the app in Prometheus' text format, for those holding the token.

Prometheus sends `Authorization: Bearer <METRICS_TOKEN>` (`authorization.credentials` in a scrape
config). Without a configured token the endpoint answers only with `ERP_ENVIRONMENT=development`:
queue names, task names and routes are not for everyone to read.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Annotated

import redis.asyncio as redis
from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from erp.core import broker, metrics
from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from erp.core.http_errors import error_responses

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

# A scrape must not hang on a missing Redis; Prometheus' own default timeout is 10 s.
SOURCE_TIMEOUT_SECONDS = 3.0


def _check_access(authorization: str | None) -> None:
    settings = get_settings()
    expected = settings.METRICS_TOKEN
    if expected is None:
        if settings.ERP_ENVIRONMENT == "development":
            return
        raise HTTPException(403, "/metrics is disabled: set METRICS_TOKEN and send it as 'Authorization: Bearer ...'")
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(secret.strip().encode(), expected.encode()):
        raise HTTPException(
            401, "send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'", {"WWW-Authenticate": "Bearer"}
        )


def known_queues() -> list[str]:
    """The default queue and every queue the configuration declares."""
    conf = celery_app.conf
    names = {conf.task_default_queue}
    names.update(queue.name for queue in conf.task_queues or ())
    return sorted(names)


async def queue_families() -> list[Metric]:
    stats = await broker.queue_stats(known_queues())
    return [
        metrics.gauge(
            metrics.QUEUE_LENGTH,
            "Messages waiting in each broker queue (all priority lists together).",
            "queue_name",
            ((name, queue.depth) for name, queue in stats.items()),
        ),
        metrics.gauge(
            metrics.QUEUE_OLDEST_AGE,
            "How long the oldest message waiting in each queue has waited (0 when none waits).",
            "queue_name",
            ((name, queue.oldest_age_seconds or 0.0) for name, queue in stats.items()),
        ),
    ]


async def task_figures() -> list[Metric]:
    client = broker.connect(get_settings().result_backend_url)
    try:
        fields: dict[str, str] = await client.hgetall(metrics.TASK_METRICS_KEY)  # type: ignore[misc]
    finally:
        await client.aclose()
    return metrics.task_families(fields)


def build_router(*sources: metrics.ScrapeSource) -> APIRouter:
    """The /metrics route, reading `sources` (beyond queue depth and task figures) at each scrape."""
    router = APIRouter(tags=["operations"])
    every_source = (queue_families, task_figures, *sources)

    @router.get(
        "/metrics",
        summary="Prometheus metrics (needs the metrics token)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **error_responses(401, 403, 503)},
    )
    async def read_metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        _check_access(authorization)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(source() for source in every_source)), SOURCE_TIMEOUT_SECONDS
            )
        except (TimeoutError, redis.RedisError, OSError, SQLAlchemyError) as error:
            raise HTTPException(503, f"metrics are unavailable: {type(error).__name__}") from error
        body, content_type = metrics.exposition(family for families in results for family in families)
        return Response(body, media_type=content_type)

    return router
