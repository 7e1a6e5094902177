from __future__ import annotations

from typing import Any

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from erp.features.ping.service import ping_database


@celery_app.task(name="erp.ping")
def ping() -> dict[str, Any]:
    return run_service(ping_database)
