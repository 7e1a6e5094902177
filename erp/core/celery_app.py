"""The Celery application: `celery -A erp.core.celery_app worker|beat`.

The app object exists at import (Celery's command line and `@celery_app.task` need it), but its
configuration is read from the settings only when Celery first looks at it (`_LazyConfig`), so
importing a task module reads no settings and opens no connection. It names no task and no task
module: they are discovered, and the product's periodic jobs declared next to their tasks
(erp.core.task_registry).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery, Task, states
from celery.exceptions import Ignore
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_retry,
    task_revoked,
    worker_before_create_process,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)
from celery.utils import uuid

from erp.core import redis_transport, running_limits, task_registry, worker_hooks
from erp.core.broker_wire import PUBLISHED_AT_HEADER, REQUEST_ID_HEADER
from erp.core.config import Settings, get_settings
from erp.core.logging import configure_logging, log_context

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from erp.core.bridge import BeforeCommit

logger = logging.getLogger(__name__)

# A guard sees a task about to run and says whether it may: False drops the message before the
# task body (acknowledged, nothing stored). The run ledger registers one for periodic runs.
RunGuard = Callable[[Task], bool]
_run_guards: list[RunGuard] = []


def add_run_guard(guard: RunGuard) -> None:
    if guard not in _run_guards:
        _run_guards.append(guard)


# A commit hook runs in an async def task's session just before its commit, with the task and
# its request: what it writes commits together with the task's work or not at all. The run
# ledger records a periodic run's success this way. It may raise to roll the work back.
CommitHook = Callable[[Task, Any, "AsyncSession"], Awaitable[None]]
_commit_hooks: list[CommitHook] = []


def add_commit_hook(hook: CommitHook) -> None:
    if hook not in _commit_hooks:
        _commit_hooks.append(hook)


def before_commit(task: Task) -> BeforeCommit | None:
    """The commit hooks bound to this run of `task` (read in the task's thread: Celery's request
    is thread-local, and the session's work runs on the bridge's loop)."""
    if not _commit_hooks:
        return None
    request = task.request

    async def run_hooks(session: AsyncSession) -> None:
        for hook in _commit_hooks:
            await hook(task, request, session)

    return run_hooks


class ErpTask(Task):  # type: ignore[misc]
    """Every erp task: guards first, then the STARTED state, then the body.

    Celery's own STARTED state (`task_track_started`) is written before any hook can drop a
    message, so a duplicate of a finished periodic run would overwrite its SUCCESS with STARTED.
    Here it is written after the guards, the same way; a result backend that is briefly away
    (Redis restarting) only costs that state, not the run.

    A task whose body is a coroutine function (`@celery_app.task async def ...(..., *, session)`)
    is given a synchronous body that runs it through the bridge (erp.core.bridge), in a fresh
    session committed when it returns: Celery 5.3 would call it, get a coroutine and fail.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        body = cls.__dict__.get("run")
        bound = not isinstance(body, staticmethod)
        function = body.__func__ if isinstance(body, staticmethod) else body
        if not inspect.iscoroutinefunction(function):
            return
        # Imported only for async def tasks: beat, which runs none, need not load the bridge.
        from erp.core.async_tasks import async_task_body

        name = cls.__dict__.get("name") or f"{cls.__module__}.{cls.__name__}"
        run = async_task_body(function, bound=bound, task_name=name)
        cls.run = run if bound else staticmethod(run)
        cls.is_async_body = True
        app = cls.__dict__.get("app")
        if "__header__" in cls.__dict__ and app is not None:
            # Celery checks the arguments of delay() against this: without `session`.
            cls.__header__ = app.type_checker(run, bound=bound)

    is_async_body = False

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        """Celery's, but in eager mode the task runs through erp.core.eager, which knows the
        bridge: from inside an event loop or a service, Celery's own eager run would nest
        run_service or wait on the loop it runs on."""
        if not self._get_app().conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        from erp.core.eager import apply_now

        return apply_now(
            self, tuple(args or ()), dict(kwargs or {}), task_id or uuid(), link=link, link_error=link_error, **options
        )

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for guard in _run_guards:
            if not guard(self):
                self.request.dropped_by_guard = True  # counted by erp.core.worker_hooks
                raise Ignore()
        if not self.ignore_result:
            try:
                self.backend.store_result(
                    task_id,
                    {"pid": os.getpid(), "hostname": self.request.hostname},
                    states.STARTED,
                    request=self.request,
                )
            except self.backend.connection_errors as error:
                logger.warning(
                    "worker: the STARTED state of %s was not stored (%s); the task runs",
                    task_id,
                    error,
                    extra={"action": "started_state_not_stored"},
                )


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting of the product, each with the reason it is what it is."""
    return {
        "broker_url": settings.broker_url,
        # kombu's Redis transport with its reconnect defect mended (see the module).
        "broker_transport": redis_transport.TRANSPORT,
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
        # When the broker connection is lost, running tasks go on and finish. Cancelling them
        # (True) cannot stop them here (pool children ignore SIGTERM, see erp.core.worker_hooks),
        # and it writes a RETRY state to the result backend, usually the Redis that just went
        # away: that error escapes Celery's consumer and the worker exits. A message Redis
        # still holds comes back only after the visibility timeout, by which time its task
        # has finished and acknowledged it; a periodic run whose message came back anyway is
        # dropped by the run ledger's guard.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
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
        # Eager mode (development and tests only, see erp.core.eager): tasks run where they are
        # queued. Their results are stored like a worker's, so the status endpoint reads them,
        # and a failure is stored rather than raised in the code that queued the task.
        "task_always_eager": settings.CELERY_TASK_ALWAYS_EAGER,
        "task_store_eager_result": True,
        "task_eager_propagates": False,
        # Leave our log configuration alone (see setup_logging below).
        "worker_hijack_root_logger": False,
        "beat_max_loop_interval": settings.CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS,
        "beat_scheduler": "erp.tasks.db_scheduler:DatabaseScheduler",
        # The product's periodic jobs, each declared next to its task, written to the
        # periodic_tasks table by beat (marked from_config).
        "beat_schedule": task_registry.DeclaredSchedule(settings),
        # The task modules, discovered: the worker and beat import them when they start.
        "imports": task_registry.task_module_names(),
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


celery_app = Celery("erp", task_cls=ErpTask)
celery_app.config_from_object(_LazyConfig())


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    configure_logging()


# Pools whose tasks share one process's threads or greenlets: the bridge's single loop per
# process and Celery's per-thread request cannot serve several async def tasks at once there.
POOLS_WITHOUT_ASYNC_TASKS = ("thread", "threads", "eventlet", "gevent")


@worker_init.connect
def _refuse_async_tasks_on_shared_pools(sender: Any = None, **_: object) -> None:
    pool = getattr(sender, "pool_cls", None)
    pool_name = pool if isinstance(pool, str) else getattr(pool, "__module__", "").rsplit(".", 1)[-1]
    if pool_name not in POOLS_WITHOUT_ASYNC_TASKS:
        return
    names = sorted(name for name, task in celery_app.tasks.items() if getattr(task, "is_async_body", False))
    if names:
        message = (
            f"erp: the {pool_name} pool cannot run async def tasks ({', '.join(names)}): run the worker with"
            " --pool prefork (the Procfile's) or --pool solo"
        )
        logger.critical(message, extra={"action": "pool_refused"})
        raise SystemExit(message)


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
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@before_task_publish.connect
def _stamp_published_at(headers: dict[str, Any] | None = None, **_: object) -> None:
    """Every message says when it was queued (erp.core.broker_wire). Set, not defaulted: a
    retry is published with its request's headers, and its wait starts again."""
    if headers is not None:
        headers[PUBLISHED_AT_HEADER] = time.time()


# Around each task: log context and figures for /metrics; at shutdown: the grace period.
worker_init.connect(worker_hooks.remember_worker, weak=False)
worker_before_create_process.connect(worker_hooks.freeze_before_fork, weak=False)
worker_process_init.connect(worker_hooks.child_ignores_sigterm, weak=False)
worker_shutting_down.connect(worker_hooks.shutting_down, weak=False)
worker_ready.connect(worker_hooks.start_watchdog, weak=False)
task_received.connect(worker_hooks.message_received, weak=False)
task_prerun.connect(worker_hooks.task_started, weak=False)
task_failure.connect(worker_hooks.task_failed, weak=False)
task_retry.connect(worker_hooks.task_retried, weak=False)
task_postrun.connect(worker_hooks.task_finished, weak=False)
# Reports and imports under way per organization: the slot is the worker's once the task starts.
task_prerun.connect(running_limits.task_started, weak=False)
task_postrun.connect(running_limits.task_finished, weak=False)
task_revoked.connect(running_limits.task_revoked, weak=False)
