"""What the worker does around each task and at shutdown (connected in erp.core.celery_app).

Around each task (in the prefork child that runs it):
- the log context gets the task id, task name, periodic task name and the request id that came
  with the message, so every line logged for the task carries them (erp.core.logging);
- when it ends, its outcome, run time and, for a periodic run, its lateness (start time minus
  the `periodic_task_scheduled_at` header) are added up in Redis for /metrics (erp.core.metrics).

At shutdown, within Heroku's 30 s between SIGTERM and SIGKILL:
- Heroku (and `docker stop` of a process group, and honcho) sends SIGTERM to every process,
  prefork children included. A child's default is to die at once, which kills the task it runs
  mid-way; with late acks it is then delivered again and its body runs a second time. So the
  children ignore SIGTERM and the main process decides: Celery's warm shutdown stops taking
  messages and lets running tasks finish.
- A task still running after `CELERY_WORKER_SHUTDOWN_GRACE_SECONDS` would be SIGKILLed with
  everything else a few seconds later and its message left invisible in Redis for the
  visibility timeout (twice the hard time limit). Instead the main process kills the children
  itself when the grace ends; the task's transaction is rolled back with its connection, and
  kombu puts the unacknowledged message back on the queue when the worker closes its
  connection, so another worker runs it at once. Nothing is lost, and nothing is done twice.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from datetime import datetime
from typing import Any

from erp.core import metrics
from erp.core.broker_wire import PERIODIC_NAME_HEADER, PERIODIC_SCHEDULED_AT_HEADER, REQUEST_ID_HEADER
from erp.core.config import get_settings
from erp.core.consumer_watchdog import ConsumerWatchdog, stop_worker_warmly
from erp.core.logging import bind, unbind

logger = logging.getLogger(__name__)


class _Running:
    """What task_prerun notes for task_postrun, in the child running the task."""

    __slots__ = ("exception", "lateness", "log_token", "outcome", "started")

    def __init__(self, started: float, lateness: float | None, log_token: Any) -> None:
        self.started = started
        self.lateness = lateness
        self.log_token = log_token
        self.outcome: str | None = None
        self.exception: str | None = None


_running: dict[str, _Running] = {}


def _header(task: Any, name: str) -> Any:
    request = task.request
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def _lateness(scheduled_at: Any) -> float | None:
    if not isinstance(scheduled_at, str):
        return None
    try:
        planned = datetime.fromisoformat(scheduled_at).timestamp()
    except ValueError:
        return None
    # Clocks of beat and worker differ a little; a run is never "early" by their difference.
    return max(0.0, time.time() - planned)


def task_started(task_id: str, task: Any, **_: Any) -> None:
    log_token = bind(
        task_id=task_id,
        task_name=task.name,
        periodic_task_name=_header(task, PERIODIC_NAME_HEADER),
        request_id=_header(task, REQUEST_ID_HEADER),
    )
    _running[task_id] = _Running(time.perf_counter(), _lateness(_header(task, PERIODIC_SCHEDULED_AT_HEADER)), log_token)


def task_failed(task_id: str, exception: BaseException | None = None, **_: Any) -> None:
    running = _running.get(task_id)
    if running is not None:
        running.outcome = "failed"
        running.exception = type(exception).__name__ if exception is not None else None


def task_retried(request: Any = None, **_: Any) -> None:
    running = _running.get(getattr(request, "id", None) or "")
    if running is not None:
        running.outcome = "retried"


def task_finished(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    running = _running.pop(task_id, None)
    if running is None:
        return
    try:
        outcome = running.outcome or ("succeeded" if state == "SUCCESS" else None)
        if getattr(task.request, "dropped_by_guard", False):
            outcome = "dropped"
        delivery_info = getattr(task.request, "delivery_info", None) or {}
        queue = delivery_info.get("routing_key") or task.app.conf.task_default_queue
        commands = metrics.task_commands(
            name=task.name,
            queue=queue,
            outcome=outcome or "",
            exception=running.exception,
            runtime=time.perf_counter() - running.started,
            lateness=running.lateness,
        )
        metrics.record_task(task.app.backend.client, commands)
    except Exception as error:  # figures must never fail a task that ran
        logger.warning("task metrics not recorded: %s", error, extra={"action": "metrics_failed"})
    finally:
        unbind(running.log_token)


# --- shutdown ---------------------------------------------------------------------------------

_worker: Any = None


def remember_worker(sender: Any = None, **_: Any) -> None:
    """worker_init: the WorkController, whose pool the shutdown may have to stop."""
    global _worker
    _worker = sender


def freeze_before_fork(**_: Any) -> None:
    """worker_before_create_process (main process, just before it forks a pool child).

    gc.freeze() moves every object so far (Celery, SQLAlchemy, the app and its settings, never
    garbage) out of the collector's reach. The child's full collections then walk only what
    it made itself, where before each walked all of it: a 100,000-row import spent about a
    fifth of its CPU in the collector. The collector also no longer writes to the pages the
    child shares with the parent (copy-on-write), as Python's gc documentation advises.
    """
    gc.freeze()


def child_ignores_sigterm(**_: Any) -> None:
    """worker_process_init: a SIGTERM sent to the whole group must not kill a task mid-run."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def pool_pids() -> list[int]:
    """The pids of the pool's children (empty for a pool without processes: solo, threads)."""
    pool = getattr(_worker, "pool", None)
    try:
        pids = pool.info.get("processes", []) if pool is not None else []
    except Exception:  # a pool already torn down has no processes to stop
        return []
    return [pid for pid in pids if isinstance(pid, int)]


def stop_children(reason: str) -> None:
    """Kill the pool's children: their tasks' messages go back to the queue (late acks)."""
    pids = pool_pids()
    if pids:
        logger.warning(
            "worker: %s; stopping %d pool process(es), their tasks go back to the queue",
            reason,
            len(pids),
            extra={"action": "tasks_requeued"},
        )
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def shutting_down(how: str = "Warm", **_: Any) -> None:
    """worker_shutting_down (main process): bound the warm shutdown by the grace period."""
    if how != "Warm":
        # Cold shutdown: billiard would stop the children with SIGTERM, which they ignore.
        stop_children("cold shutdown")
        return
    grace = get_settings().CELERY_WORKER_SHUTDOWN_GRACE_SECONDS
    logger.info("worker: stopping; running tasks have %.0f s to finish", grace, extra={"action": "warm_shutdown"})
    timer = threading.Timer(grace, stop_children, args=(f"tasks still running after {grace:g} s",))
    timer.daemon = True
    timer.start()


# --- a worker that stopped consuming (erp.core.consumer_watchdog) ------------------------------

_watchdog: ConsumerWatchdog | None = None


def start_watchdog(sender: Any = None, **_: Any) -> None:
    """worker_ready (main process): watch the consumer of a worker started from the command line.

    Not in a worker embedded in another process (celery.contrib.testing): stopping it would
    stop that process.
    """
    global _watchdog
    from celery.apps.worker import Worker

    if not isinstance(getattr(sender, "controller", None), Worker):
        return
    import redis

    settings = get_settings()
    _watchdog = ConsumerWatchdog(
        sender,
        redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5),
        stall_seconds=settings.CELERY_WORKER_STALL_TIMEOUT_SECONDS,
        grace_seconds=settings.CELERY_WORKER_SHUTDOWN_GRACE_SECONDS,
        stop_worker=_stop_stalled_worker,
    )
    _watchdog.start()


def _stop_stalled_worker(exitcode: int) -> None:
    shutting_down("Warm")  # the grace period, as for a SIGTERM
    stop_worker_warmly(exitcode)


def message_received(**_: Any) -> None:
    """task_received (main process)."""
    if _watchdog is not None:
        _watchdog.message_received()
