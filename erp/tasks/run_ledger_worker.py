"""The run ledger in the worker: each occurrence runs at most once, and its outcome is recorded.

Before the body of a periodic run (a message with the `periodic_task_name` header), the worker
turns its ledger row from planned/sent/retried to started, in one statement. If the row is
already started or finished, the message is a duplicate (beat published it twice after a
crash, or someone sent it by hand): it is dropped before the task body runs, logged and
counted. A message redelivered because its worker died (late acks: kombu marks it
`redelivered`) takes over a row left started. Together with beat's outbox this runs each
occurrence effectively once, whatever fails.

Outcomes (succeeded, failed with its error, retried, revoked) are written back from Celery's
signals, one round trip per periodic run; other tasks cost nothing here (no header, no query).
A failure counts towards the task's auto-pause; reaching it pauses the task with a note and an
alert. The worker's connections are its own small synchronous pool, made per process after the
fork.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from typing import Any

from celery import Task
from celery.signals import task_failure, task_retry, task_revoked, task_success
from sqlalchemy import Engine, text

from erp.core.celery_app import add_run_guard
from erp.core.db import create_sync_engine
from erp.tasks.periodic_messages import NAME_HEADER

logger = logging.getLogger(__name__)

# The most error text kept per failed occurrence.
ERROR_MESSAGE_LIMIT = 2000


@functools.cache
def _engine_for(pid: int) -> Engine:
    # One per process: a prefork child must not use connections opened by its parent.
    return create_sync_engine("erp-worker-ledger", pool_size=1, max_overflow=1, pool_pre_ping=True)


def _engine() -> Engine:
    return _engine_for(os.getpid())


def _is_periodic(request: Any) -> bool:
    """Does this task request (a task's Context, or the worker's Request) carry a periodic run?"""
    if getattr(request, NAME_HEADER, None) is not None:
        return True
    for headers in (getattr(request, "request_dict", None), getattr(request, "headers", None)):
        if isinstance(headers, dict) and headers.get(NAME_HEADER) is not None:
            return True
    return False


def _worker_name(request: Any) -> str:
    return f"{getattr(request, 'hostname', None) or socket.gethostname()}:{os.getpid()}"


CLAIM = text(
    """
    UPDATE periodic_task_runs
    SET state = 'started', started_at = now(), worker = :worker, attempts = attempts + 1,
        lateness_seconds = EXTRACT(EPOCH FROM now() - scheduled_at)
    WHERE message_id = :message_id
      AND (state IN ('planned', 'sent', 'retried') OR (state = 'started' AND :redelivered))
    RETURNING id
    """
)


def may_run(task: Task) -> bool:
    """The run guard: False for a duplicate of an occurrence that ran or runs elsewhere."""
    request = task.request
    if not _is_periodic(request):
        return True
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    with _engine().begin() as connection:
        claimed = connection.execute(
            CLAIM, {"message_id": request.id, "worker": _worker_name(request), "redelivered": redelivered}
        ).first()
        if claimed is not None:
            return True
        state = connection.execute(
            text("SELECT state FROM periodic_task_runs WHERE message_id = :id"), {"id": request.id}
        ).scalar()
    if state is None:
        return True  # not in the ledger (sent before it existed): nothing to compare with
    logger.warning(
        "worker: dropped a duplicate of periodic run %s (%s): it is already %s",
        request.id,
        task.name,
        state,
        extra={"action": "duplicate_dropped", "task_id": request.id},
    )
    return False


add_run_guard(may_run)

FINISH = text(
    """
    WITH run AS (
        UPDATE periodic_task_runs SET state = :state, finished_at = now(),
            error_type = :error_type, error_message = :error_message
        WHERE message_id = :message_id AND state IN ('started', 'planned', 'sent', 'retried')
        RETURNING id, periodic_task_id
    ), streak AS (
        UPDATE periodic_tasks AS t SET consecutive_failures = CASE WHEN :failed THEN t.consecutive_failures + 1 ELSE 0 END
        WHERE t.id IN (SELECT periodic_task_id FROM run) AND :ends_streak_or_adds
          AND (:failed OR t.consecutive_failures <> 0)
        RETURNING t.id, t.name, t.consecutive_failures, t.auto_pause_after_failures, t.paused_at
    ), wake AS (
        SELECT pg_notify('erp_periodic_tasks', '') FROM periodic_task_runs AS held
        WHERE held.state = 'held' AND held.periodic_task_id IN (SELECT periodic_task_id FROM run)
        LIMIT 1
    )
    SELECT streak.id, streak.name, streak.consecutive_failures, streak.auto_pause_after_failures,
           streak.paused_at, (SELECT count(*) FROM wake) AS woken, (SELECT id FROM run) AS run_id
    FROM (SELECT 1) AS one LEFT JOIN streak ON true
    """
)


def _finish(request: Any, state: str, error: BaseException | None = None) -> None:
    if request is None or not _is_periodic(request):
        return
    failed = state == "failed"
    with _engine().begin() as connection:
        row = connection.execute(
            FINISH,
            {
                "message_id": request.id,
                "state": state,
                "failed": failed,
                # A retry neither breaks a run of failures nor adds to it.
                "ends_streak_or_adds": state in ("succeeded", "failed"),
                "error_type": type(error).__name__ if error is not None else None,
                "error_message": str(error)[:ERROR_MESSAGE_LIMIT] if error is not None else None,
            },
        ).first()
        if not failed or row is None or row.id is None:
            return
        connection.execute(
            text(
                "INSERT INTO periodic_task_alerts (kind, periodic_task_id, periodic_task_name, run_id, message)"
                " VALUES ('failure', :id, :name, :run_id, :message)"
            ),
            {
                "id": row.id,
                "run_id": row.run_id,
                "name": row.name,
                "message": f"{row.name}: the run {request.id} failed: {type(error).__name__}: {error}",
            },
        )
        limit = row.auto_pause_after_failures
        if limit is not None and row.paused_at is None and row.consecutive_failures >= limit:
            note = (
                f"paused after {row.consecutive_failures} failures in a row (the last: {type(error).__name__}: {error})"
            )
            connection.execute(
                text(
                    "UPDATE periodic_tasks SET paused_at = now(), paused_by = 'auto-pause', pause_note = :note,"
                    " version = version + 1 WHERE id = :id AND paused_at IS NULL"
                ),
                {"id": row.id, "note": note[:ERROR_MESSAGE_LIMIT]},
            )
            connection.execute(
                text(
                    "INSERT INTO periodic_task_changes (periodic_task_id, periodic_task_name, action, actor_email, changes)"
                    " VALUES (:id, :name, 'pause', 'auto-pause', CAST(:changes AS jsonb))"
                ),
                {"id": row.id, "name": row.name, "changes": '{"paused": [false, true]}'},
            )
            connection.execute(
                text(
                    "INSERT INTO periodic_task_alerts (kind, periodic_task_id, periodic_task_name, message)"
                    " VALUES ('auto_pause', :id, :name, :message)"
                ),
                {"id": row.id, "name": row.name, "message": f"{row.name}: {note}"},
            )
            logger.warning("worker: periodic task %r %s", row.name, note, extra={"action": "auto_paused"})


@task_success.connect
def _succeeded(sender: Task | None = None, **_: Any) -> None:
    _finish(getattr(sender, "request", None), "succeeded")


@task_failure.connect
def _failed(sender: Task | None = None, exception: BaseException | None = None, **_: Any) -> None:
    _finish(getattr(sender, "request", None), "failed", exception)


@task_retry.connect
def _retried(sender: Task | None = None, request: Any = None, **_: Any) -> None:
    _finish(request or getattr(sender, "request", None), "retried")


@task_revoked.connect
def _revoked(request: Any = None, expired: bool = False, **_: Any) -> None:
    if request is None or not _is_periodic(request):
        return
    if expired:
        with _engine().begin() as connection:
            connection.execute(
                text(
                    "UPDATE periodic_task_runs SET state = 'skipped', skip_reason = 'expired', finished_at = now()"
                    " WHERE message_id = :id AND state IN ('planned', 'sent', 'retried')"
                ),
                {"id": request.id},
            )
        return
    _finish(request, "revoked")
