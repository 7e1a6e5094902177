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
An `async def` task records its success in its own session, just before its commit
(`record_success_with_the_work`): its work and its outcome commit together, so a worker killed
at any moment leaves both or neither, and its work is done exactly once. A failure counts
towards the task's auto-pause; reaching it pauses the task with a note and an alert. The
statements go through the worker process's synchronous engine (erp.core.db).

Who may take over a run left `started`: a redelivered message, only when the process that
started it is gone (erp.tasks.worker_heartbeats); a message sent again while that process still
runs it is a duplicate. Each outcome is written only by the process that holds the run (its
`worker`): one that was frozen, declared gone and overtaken records nothing when it wakes, and
an async def task of it rolls its work back.

PostgreSQL restarting: the guard and the outcome writes wait for it (with back-off, up to
`WORKER_DATABASE_WAIT_SECONDS`). A guard that still cannot reach the ledger puts the message
back on the queue rather than run it unguarded or acknowledge it unrun. A run started more than
`RUN_LEDGER_MAX_ATTEMPTS` times (its worker keeps dying under it) is failed, with an alert.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject
from celery.signals import task_failure, task_retry, task_revoked, task_success
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from erp.core.broker_wire import PERIODIC_NAME_HEADER
from erp.core.celery_app import add_commit_hook, add_run_guard
from erp.core.config import get_settings
from erp.core.db import SCHEDULE_CHANGES_CHANNEL, worker_sync_engine
from erp.core.errors import ERROR_TEXT_LIMIT, error_message, error_text
from erp.core.retries import is_transient
from erp.tasks.worker_heartbeats import process_is_gone

logger = logging.getLogger(__name__)

# The most error text kept per failed occurrence (and in an auto-pause note): the shared bound
# of erp.core.errors, whose `error_text` makes every failure's text.
ERROR_MESSAGE_LIMIT = ERROR_TEXT_LIMIT


def _engine() -> Engine:
    return worker_sync_engine()


def _is_periodic(request: Any) -> bool:
    """Does this task request (a task's Context, or the worker's Request) carry a periodic run?"""
    if getattr(request, PERIODIC_NAME_HEADER, None) is not None:
        return True
    for headers in (getattr(request, "request_dict", None), getattr(request, "headers", None)):
        if isinstance(headers, dict) and headers.get(PERIODIC_NAME_HEADER) is not None:
            return True
    return False


def _node(request: Any) -> str:
    return getattr(request, "hostname", None) or socket.gethostname()


def _worker_name(request: Any) -> str:
    return f"{_node(request)}:{os.getpid()}"


T = TypeVar("T")


def _with_database(action: Callable[[], T], what: str) -> T:
    """`action()`, tried again while PostgreSQL is unreachable, up to WORKER_DATABASE_WAIT_SECONDS."""

    def log(retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if retry_state.attempt_number == 1:
            logger.warning(
                "worker: %s waits for PostgreSQL (%s)",
                what,
                error_text(error) if error is not None else "no error",
                extra={"action": "waiting_for_database"},
            )

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(get_settings().WORKER_DATABASE_WAIT_SECONDS),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        before_sleep=log,
        reraise=True,
    )
    return retrying(action)


CLAIM = text(
    """
    UPDATE periodic_task_runs
    SET state = 'started', started_at = now(), worker = :worker, attempts = attempts + 1,
        lateness_seconds = EXTRACT(EPOCH FROM now() - scheduled_at)
    WHERE message_id = :message_id
      AND (state IN ('planned', 'sent', 'retried') OR (state = 'started' AND worker = :previous_worker))
    RETURNING id, attempts, periodic_task_id, periodic_task_name
    """
)
_CURRENT = text("SELECT state, worker, started_at FROM periodic_task_runs WHERE message_id = :id")


def may_run(task: Task) -> bool:
    """The run guard: False for a duplicate of an occurrence that ran or runs elsewhere."""
    request = task.request
    if not _is_periodic(request):
        return True
    try:
        return _with_database(lambda: _claim(task, request), f"the run guard of {request.id}")
    except Exception as error:
        if not is_transient(error):
            raise
        logger.error(
            "worker: the run ledger cannot be reached (%s); periodic run %s goes back to the queue",
            error_text(error),
            request.id,
            extra={"action": "guard_requeued", "task_id": request.id},
        )
        raise Reject(f"run ledger unreachable: {error_text(error)}", requeue=True) from error


def _claim(task: Task, request: Any) -> bool:
    me = _worker_name(request)
    settings = get_settings()
    with _engine().begin() as connection:
        params = {"message_id": request.id, "worker": me, "previous_worker": None}
        claimed = connection.execute(CLAIM, params).first()
        current = None
        if claimed is None:
            current = connection.execute(_CURRENT, {"id": request.id}).first()
            if current is None:
                return True  # not in the ledger (sent before it existed): nothing to compare with
            redelivered = bool((request.delivery_info or {}).get("redelivered"))
            if (
                current.state == "started"
                and redelivered
                and current.worker
                and process_is_gone(
                    connection,
                    current.worker,
                    current.started_at,
                    here=_node(request),
                    lost_after=settings.WORKER_LOST_AFTER_SECONDS,
                )
            ):
                # Its process died under it (late acks delivered the message again): take it over.
                claimed = connection.execute(CLAIM, {**params, "previous_worker": current.worker}).first()
        if claimed is not None:
            if claimed.attempts <= settings.RUN_LEDGER_MAX_ATTEMPTS:
                return True
            _fail_unrunnable(connection, claimed, request.id)
            return False
    logger.warning(
        "worker: dropped a duplicate of periodic run %s (%s): it is already %s%s",
        request.id,
        task.name,
        current.state if current is not None else "gone",
        f" on {current.worker}" if current is not None and current.state == "started" else "",
        extra={"action": "duplicate_dropped", "task_id": request.id},
    )
    return False


def _fail_unrunnable(connection: Connection, claimed: Any, message_id: str) -> None:
    """A run whose worker died under it RUN_LEDGER_MAX_ATTEMPTS times: failed, with an alert."""
    reason = f"started {claimed.attempts - 1} times and its worker stopped each time; not started again"
    connection.execute(
        text(
            "UPDATE periodic_task_runs SET state = 'failed', finished_at = now(), error_type = 'WorkerLost',"
            " error_message = :reason WHERE id = :id"
        ),
        {"id": claimed.id, "reason": reason},
    )
    _add_alert(connection, claimed.periodic_task_id, claimed.periodic_task_name, claimed.id, message_id, reason)
    logger.error(
        "worker: periodic run %s of %r failed: %s",
        message_id,
        claimed.periodic_task_name,
        reason,
        extra={"action": "run_unrunnable", "task_id": message_id},
    )


def _add_alert(
    connection: Connection, periodic_task_id: int, name: str, run_id: int | None, message_id: str, reason: str
) -> None:
    connection.execute(
        text(
            "INSERT INTO periodic_task_alerts (kind, periodic_task_id, periodic_task_name, run_id, message)"
            " VALUES ('failure', :id, :name, :run_id, :message)"
        ),
        {
            "id": periodic_task_id,
            "run_id": run_id,
            "name": name,
            "message": f"{name}: the run {message_id} failed: {reason}",
        },
    )


add_run_guard(may_run)

FINISH = text(
    f"""
    WITH run AS (
        UPDATE periodic_task_runs SET state = :state, finished_at = now(),
            error_type = :error_type, error_message = :error_message
        WHERE message_id = :message_id AND state IN ('started', 'planned', 'sent', 'retried')
          -- Only the process holding a started run records its outcome (see the module).
          AND (state <> 'started' OR worker = :worker)
        RETURNING id, periodic_task_id
    ), streak AS (
        UPDATE periodic_tasks AS t SET consecutive_failures = CASE WHEN :failed THEN t.consecutive_failures + 1 ELSE 0 END
        WHERE t.id IN (SELECT periodic_task_id FROM run) AND :ends_streak_or_adds
          AND (:failed OR t.consecutive_failures <> 0)
        RETURNING t.id, t.name, t.consecutive_failures, t.auto_pause_after_failures, t.paused_at
    ), wake AS (
        SELECT pg_notify('{SCHEDULE_CHANGES_CHANNEL}', '') FROM periodic_task_runs AS held
        WHERE held.state = 'held' AND held.periodic_task_id IN (SELECT periodic_task_id FROM run)
        LIMIT 1
    )
    SELECT streak.id, streak.name, streak.consecutive_failures, streak.auto_pause_after_failures,
           streak.paused_at, (SELECT count(*) FROM wake) AS woken, (SELECT id FROM run) AS run_id
    FROM (SELECT 1) AS one LEFT JOIN streak ON true
    """
)


def _finish_params(request: Any, state: str, error: BaseException | None) -> dict[str, Any]:
    return {
        "message_id": request.id,
        "worker": _worker_name(request),
        "state": state,
        "failed": state == "failed",
        # A retry neither breaks a run of failures nor adds to it.
        "ends_streak_or_adds": state in ("succeeded", "failed"),
        "error_type": type(error).__name__ if error is not None else None,
        "error_message": error_message(error, ERROR_MESSAGE_LIMIT) if error is not None else None,
    }


def _finish(request: Any, state: str, error: BaseException | None = None) -> None:
    if request is None or not _is_periodic(request) or getattr(request, "outcome_recorded", False):
        return
    # An outcome is waited for like the guard: a run whose outcome is lost stays `started`.
    _with_database(lambda: _write_outcome(request, state, error), f"the outcome of {request.id}")


def _write_outcome(request: Any, state: str, error: BaseException | None) -> None:
    failed = state == "failed"
    with _engine().begin() as connection:
        row = connection.execute(FINISH, _finish_params(request, state, error)).first()
        if row is None or row.run_id is None:
            _note_not_recorded(connection, request, state)
            return
        if not failed or row.id is None:
            return
        described = error_text(error) if error is not None else "an unknown error"
        _add_alert(connection, row.id, row.name, row.run_id, request.id, described)
        limit = row.auto_pause_after_failures
        if limit is not None and row.paused_at is None and row.consecutive_failures >= limit:
            note = f"paused after {row.consecutive_failures} failures in a row (the last: {described})"
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


def _note_not_recorded(connection: Connection, request: Any, state: str) -> None:
    current = connection.execute(_CURRENT, {"id": request.id}).first()
    if current is not None and current.state == "started" and current.worker != _worker_name(request):
        logger.warning(
            "worker: the outcome (%s) of periodic run %s is not recorded: %s took the run over while this"
            " process was not answering",
            state,
            request.id,
            current.worker,
            extra={"action": "outcome_superseded", "task_id": request.id},
        )


async def record_success_with_the_work(task: Task, request: Any, session: AsyncSession) -> None:
    """Commit hook of async def tasks: a periodic run's success, in the task's own transaction.

    If the run is no longer this process's (it was taken over while this one was frozen), the
    work is rolled back and the message dropped: the process holding the run does it.
    """
    if not _is_periodic(request):
        return
    row = (await session.execute(FINISH, _finish_params(request, "succeeded", None))).first()
    if row is None or row.run_id is None:
        logger.warning(
            "worker: periodic run %s (%s) was taken over while this process was not answering; its work is rolled back",
            request.id,
            task.name,
            extra={"action": "work_superseded", "task_id": request.id},
        )
        raise Ignore()
    request.outcome_recorded = True


add_commit_hook(record_success_with_the_work)
