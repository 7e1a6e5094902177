"""The FastAPI application factory: `uvicorn --factory erp.api.app:create_app`.

Wiring only: routers, error handlers, logging and shutdown. Everything a route does lives in
the package of its subject (erp.accounts, erp.tasks, erp.features.<name>).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from erp.accounts import router as accounts_router
from erp.console import router as console_router
from erp.console import work as console_work
from erp.core import broker, concurrency_slots, idempotency, metrics, metrics_router, probes, quotas, task_owners
from erp.core.bridge import shutdown_bridge
from erp.core.db import dispose_web_engine
from erp.core.http_errors import install_error_handlers
from erp.core.logging import configure_logging
from erp.core.request_bodies import RequestBodyGuard
from erp.core.request_ids import RequestIdMiddleware
from erp.features.data_processing import router as data_processing_router
from erp.features.ping import router as ping_router
from erp.features.reports import router as reports_router
from erp.tasks.api import (
    beat_heartbeats,
    health_checks_router,
    ledger_router,
    periodic_tasks_router,
    task_status_router,
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # What the process made while starting (modules, routes, templates, the ORM's mappers) lives
    # as long as it does: moved out of the collector's generations, a full collection no longer
    # walks it, where one walked it in the middle of a request (a console page spent 5 to 8 ms of
    # its 30 there, at random places in its own code; scripts/bench_console).
    gc.collect()
    gc.freeze()
    yield
    await dispose_web_engine()
    await task_owners.close()
    await concurrency_slots.close()
    await idempotency.close()
    await quotas.close()
    await broker.close()
    # Eager mode ran tasks in this process, on the bridge's loop: its connections go too.
    await asyncio.to_thread(shutdown_bridge)


def create_app() -> FastAPI:
    configure_logging()
    # Before anything counts: prometheus-client reads the directory when its first metric is made.
    metrics.prepare_web_metrics()
    app = FastAPI(
        title="erp",
        version="1.0.0",
        description="Task-processing backbone of the ERP backend: dispatch work, read task state, manage periodic schedules.",
        lifespan=_lifespan,
    )
    # Inside the error handlers (their catch-all stays outermost), outside everything that reads a body.
    app.add_middleware(RequestBodyGuard)
    install_error_handlers(app)
    # The request id outermost, so every line of a request (access log included) carries it.
    app.add_middleware(metrics.HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(probes.router)
    app.include_router(metrics_router.build_router(beat_heartbeats.heartbeat_age_families))
    app.include_router(beat_heartbeats.router)
    # Feature routers before the generic task-status router: `/api/v1/tasks/ping` must not be
    # read as a task id.
    app.include_router(ping_router.router)
    app.include_router(task_status_router.router)
    app.include_router(accounts_router.router)
    app.include_router(periodic_tasks_router.router)
    app.include_router(reports_router.router)
    app.include_router(data_processing_router.router)
    app.include_router(health_checks_router.router)
    app.include_router(ledger_router.router)
    app.include_router(console_router.router)
    app.include_router(console_work.router)
    return app
