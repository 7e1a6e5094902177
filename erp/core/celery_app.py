"""The Celery application: `celery -A erp.core.celery_app worker|beat`.

The app object exists at import (Celery's command line and `@celery_app.task` need it), but its
configuration is read from the settings only when Celery first looks at it (`_LazyConfig`), so
importing a task module reads no settings and opens no connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from celery import Celery, Task, states
from celery.exceptions import Ignore
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_before_create_process,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)

from erp.core import worker_hooks
from erp.core.config import Settings, get_settings
from erp.core.logging import configure_logging, log_context

# Every module that defines tasks, in one place: the worker imports these at start-up.
TASK_MODULES = [
    "erp.features.ping.tasks",
    "erp.features.reports.tasks",
    "erp.features.data_processing.tasks",
    "erp.tasks.periodic_health_checks",
    "erp.tasks.run_ledger_worker",
    "erp.tasks.file_retention",
    "erp.tasks.alerts",
]
# How often beat has the alerts delivered (erp.tasks.alerts), when webhooks are configured.
ALERT_DELIVERY_EVERY_SECONDS = 15.0

# A guard sees a task about to run and says whether it may: False drops the message before the
# task body (acknowledged, nothing stored). The run ledger registers one for periodic runs.
RunGuard = Callable[[Task], bool]
_run_guards: list[RunGuard] = []


def add_run_guard(guard: RunGuard) -> None:
    if guard not in _run_guards:
        _run_guards.append(guard)


class ErpTask(Task):  # type: ignore[misc]
    """Every erp task: guards first, then the STARTED state, then the body.

    Celery's own STARTED state (`task_track_started`) is written before any hook can drop a
    message, so a duplicate of a finished periodic run would overwrite its SUCCESS with STARTED.
    Here it is written after the guards, the same way.
    """

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for guard in _run_guards:
            if not guard(self):
                self.request.dropped_by_guard = True  # counted by erp.core.worker_hooks
                raise Ignore()
        if not self.ignore_result:
            self.backend.store_result(
                task_id, {"pid": os.getpid(), "hostname": self.request.hostname}, states.STARTED, request=self.request
            )


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
        # ...and also when the child process is killed (OOM, hard limit, the end of the shutdown
        # grace in erp.core.worker_hooks): re-queue instead of fail.
        "task_reject_on_worker_lost": True,
        # When the broker connection is lost, Redis will hand the unacked messages of running
        # tasks to another worker: stop those tasks rather than let them finish a second time.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
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
        # STARTED tells a caller the task left the queue: ErpTask writes it after its guards
        # (Celery's own would come before them). Extended results keep the task name.
        "task_track_started": False,
        "result_extended": True,
        "worker_concurrency": settings.CELERY_WORKER_CONCURRENCY,
        # Leave our log configuration alone (see setup_logging below).
        "worker_hijack_root_logger": False,
        "beat_max_loop_interval": settings.CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS,
        "beat_scheduler": "erp.tasks.db_scheduler:DatabaseScheduler",
        # Written to the periodic_tasks table by beat (marked from_config); edit cadence here.
        "beat_schedule": beat_schedule(settings),
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic tasks of the product itself, written to the periodic_tasks table by beat.

    Alerts are delivered by a worker task, so a slow webhook never holds beat up; without
    webhooks there is nothing to deliver, and no message every 15 seconds to do nothing.
    """
    entries: dict[str, dict[str, Any]] = {
        "erp.health_check": {"task": "erp.health_check", "schedule": settings.HEALTH_CHECK_INTERVAL_SECONDS},
        # Files past FILE_RETENTION_HOURS are deleted within the hour after.
        "erp.prune_expired_files": {"task": "erp.prune_expired_files", "schedule": 3600.0},
    }
    if settings.alert_webhook_urls:
        entries["erp.deliver_alerts"] = {"task": "erp.deliver_alerts", "schedule": ALERT_DELIVERY_EVERY_SECONDS}
    return entries


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


celery_app = Celery("erp", include=TASK_MODULES, task_cls=ErpTask)
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


@before_task_publish.connect
def _carry_request_id(headers: dict[str, Any] | None = None, **_: object) -> None:
    """Tasks queued through kombu inside a request or a task carry its request id on."""
    request_id = log_context().get("request_id")
    if request_id and headers is not None:
        headers.setdefault(worker_hooks.REQUEST_ID_HEADER, request_id)


# Around each task: log context and figures for /metrics; at shutdown: the grace period.
worker_init.connect(worker_hooks.remember_worker, weak=False)
worker_before_create_process.connect(worker_hooks.freeze_before_fork, weak=False)
worker_process_init.connect(worker_hooks.child_ignores_sigterm, weak=False)
worker_shutting_down.connect(worker_hooks.shutting_down, weak=False)
task_prerun.connect(worker_hooks.task_started, weak=False)
task_failure.connect(worker_hooks.task_failed, weak=False)
task_retry.connect(worker_hooks.task_retried, weak=False)
task_postrun.connect(worker_hooks.task_finished, weak=False)
