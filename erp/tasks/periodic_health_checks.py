"""A periodic task that proves the whole chain beat -> broker -> worker -> PostgreSQL works.

It is registered in `beat_schedule` (see erp.core.celery_app), so every deployment has one
schedule from configuration; its last run time, readable through the schedules API, tells an
operator that beat and the workers are alive.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app

logger = logging.getLogger(__name__)


async def check_database(*, session: AsyncSession) -> bool:
    value: int = (await session.execute(text("SELECT 1"))).scalar_one()
    return value == 1


@celery_app.task(name="erp.health_check")
def health_check() -> dict[str, bool]:
    database_ok = run_service(check_database)
    logger.info("periodic health check: database ok=%s", database_ok)
    return {"database": database_ok}
