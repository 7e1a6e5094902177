"""Deleting files past their retention (FILE_RETENTION_HOURS): a periodic task from configuration."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.core.files import file_store

logger = logging.getLogger(__name__)


async def prune_files(*, session: AsyncSession) -> int:
    return await file_store(session).prune_expired()


@celery_app.task(name="erp.prune_expired_files")
def prune_expired_files() -> dict[str, int]:
    deleted = run_service(prune_files)
    logger.info("deleted %s expired files", deleted, extra={"action": "files.pruned"})
    return {"deleted": deleted}
