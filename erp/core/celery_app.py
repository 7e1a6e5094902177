"""The Celery application: `celery -A erp.core.celery_app worker|beat`.

The app object exists at import (Celery's command line and `@celery_app.task` need it), but its
configuration is read from the settings only when Celery first looks at it (`_LazyConfig`), so
importing a task module reads no settings and opens no connection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

from erp.core.config import Settings, get_settings
from erp.core.logging import configure_logging

# Every module that defines tasks, in one place: the worker imports these at start-up.
TASK_MODULES = [
    "erp.features.ping.tasks",
    "erp.features.reports.tasks",
    "erp.features.data_processing.tasks",
    "erp.tasks.periodic_health_checks",
    "erp.tasks.file_retention",
]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting of the product, each with the reason it is what it is."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend_url,
        # JSON only: a pickle payload from anyone who can write to Redis would run code in the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": settings.TIME_ZONE,
        "enable_utc": True,
        # Events feed Flower and `celery events`; the sent event gives a queued time for status.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Ack after the task ran, so a task whose worker dies mid-run is delivered again, not lost.
        "task_acks_late": True,
        # ...and also when the child process is killed (OOM, hard limit): re-queue instead of fail.
        "task_reject_on_worker_lost": True,
        # Reserve one message per process: long ERP tasks should not wait behind a busy sibling.
        "worker_prefetch_multiplier": 1,
        # Redis hands an unacked message to another worker after this; it must outlast the hard limit.
        "broker_transport_options": {
            "visibility_timeout": settings.CELERY_TASK_TIME_LIMIT_SECONDS * 2,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "result_backend_transport_options": {"socket_connect_timeout": 2, "socket_timeout": 5},
        # Keep retrying the broker at start-up (Redis may come up after us) instead of exiting.
        "broker_connection_retry_on_startup": True,
        # Publishing gives up after about two seconds so the API can answer 503 instead of hanging.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        # The soft limit raises inside the task so it can clean up; the hard limit kills the child.
        "task_soft_time_limit": settings.CELERY_TASK_SOFT_TIME_LIMIT_SECONDS,
        "task_time_limit": settings.CELERY_TASK_TIME_LIMIT_SECONDS,
        # Results are read by the status endpoint shortly after; expire them so Redis does not fill.
        "result_expires": settings.CELERY_RESULT_EXPIRES_SECONDS,
        # STARTED tells a caller the task left the queue; extended results keep the task name.
        "task_track_started": True,
        "result_extended": True,
        "worker_concurrency": settings.CELERY_WORKER_CONCURRENCY,
        # Leave our log configuration alone (see setup_logging below).
        "worker_hijack_root_logger": False,
        "beat_max_loop_interval": settings.CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS,
        "beat_scheduler": "erp.tasks.db_scheduler:DatabaseScheduler",
        # Written to the periodic_tasks table by beat (marked from_config); edit cadence here.
        "beat_schedule": {
            "erp.health_check": {"task": "erp.health_check", "schedule": settings.HEALTH_CHECK_INTERVAL_SECONDS},
            # Files past FILE_RETENTION_HOURS are deleted within the hour after.
            "erp.prune_expired_files": {"task": "erp.prune_expired_files", "schedule": 3600.0},
        },
    }


class _LazyConfig(Mapping[str, Any]):
    """`celery_config(get_settings())`, built the first time Celery reads its configuration."""

    def __init__(self) -> None:
        self._config: dict[str, Any] | None = None

    def _loaded(self) -> dict[str, Any]:
        if self._config is None:
            self._config = celery_config(get_settings())
        return self._config

    def __getitem__(self, key: str) -> Any:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


celery_app = Celery("erp", include=TASK_MODULES)
celery_app.config_from_object(_LazyConfig())


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    configure_logging()


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    """A prefork child must not use sockets opened by its parent before the fork.

    `dispose(close=False)` gives the child a fresh pool without closing the parent's
    connections, which the parent still owns.
    """
    from erp.core.db import web_engine

    if web_engine.cache_info().currsize:
        web_engine().sync_engine.dispose(close=False)


@worker_process_shutdown.connect
def _close_bridge(**_: object) -> None:
    from erp.core.bridge import shutdown_bridge

    shutdown_bridge()
