"""Deleting files past their retention (FILE_RETENTION_HOURS): a periodic job of the product, hourly."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.files import file_store
from erp.core.task_registry import periodic_job

logger = logging.getLogger(__name__)

TASK_NAME = "erp.prune_expired_files"
# Files past FILE_RETENTION_HOURS are deleted within the hour after.
PRUNE_EVERY_SECONDS = 3600.0


async def prune_files(*, session: AsyncSession) -> int:
    return await file_store(session).prune_expired()


@celery_app.task(name=TASK_NAME)
def prune_expired_files() -> dict[str, int]:
    deleted = run_service(prune_files)
    logger.info("deleted %s expired files", deleted, extra={"action": "files.pruned"})
    return {"deleted": deleted}


periodic_job(TASK_NAME, every=PRUNE_EVERY_SECONDS)
