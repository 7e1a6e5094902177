"""The FastAPI application factory: `uvicorn --factory erp.api.app:create_app`."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from erp.api import health, task_owners, tasks
from erp.api.errors import install_error_handlers
from erp.core import broker
from erp.core.db import async_engine
from erp.core.logging import configure_logging
from erp.features.accounts import router as accounts_router
from erp.features.ping import router as ping_router
from erp.tasks import router as periodic_tasks_router


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    await async_engine.dispose()
    await task_owners.close()
    await broker.close()


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        title="erp",
        version="1.0.0",
        description="Task-processing backbone of the ERP backend: dispatch work, read task state, manage periodic schedules.",
        lifespan=_lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    # Feature routers before the generic task-status router: `/api/v1/tasks/ping` must not be
    # read as a task id.
    app.include_router(ping_router.router)
    app.include_router(tasks.router)
    app.include_router(accounts_router.router)
    app.include_router(periodic_tasks_router.router)
    return app
