"""`DatabaseScheduler`: Celery Beat reading its schedules from PostgreSQL.

    celery -A erp.core.celery_app beat -S erp.tasks.db_scheduler.DatabaseScheduler

How a tick works (all in `tick`):
1. Rows whose `next_run_at` is NULL (new, or changed through plain SQL) get it computed.
2. Plan: due rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` in batches; for each,
   its occurrences go into the run ledger (periodic_task_runs: planned, held or skipped with a
   reason) and the row is advanced (`next_run_at`, `last_run_at`, `total_run_count`), in one
   short transaction per batch with no Redis in it. A second beat skips the locked rows and,
   once they are committed, no longer sees them as due.
3. Publish: planned occurrences whose time has come are locked, published in one Redis round
   trip per batch (erp.core.batch_publisher) and marked sent, in one transaction per batch. A
   beat that dies at any point leaves planned occurrences that the next tick of any beat
   publishes: none is lost. One published twice (a beat killed between publishing and
   committing) is dropped by the worker, which runs an occurrence only once (the ledger).
4. Held occurrences whose predecessors finished are released; missed deadlines are flagged
   (and alerted); old ledger rows are pruned in small batches.
5. Beat then waits for the next due time, or until a trigger NOTIFYs that a schedule changed,
   or `CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS`, whichever comes first.

Nothing is held in memory between ticks, so an edit is seen on the next tick and the cost of a
tick depends on what is due, not on the size of the table.

Faults. A row beat cannot use (a schedule it cannot compute, arguments it cannot decode,
routing that reaches no queue, anything else that row raises) is disabled with a readable
`disabled_reason` (and an alert); the other rows go on, and no error stops beat: an unexpected
one is logged and the tick retried with back-off. A beat that freezes or loses its host inside
a transaction has its session ended by PostgreSQL after `CELERY_BEAT_STALL_TIMEOUT_SECONDS` (a
vanished client is noticed by TCP keepalives), so its locks go and another beat takes the rows
over, saying so in its log.

This class keeps Celery's interface and the tick (about 400 lines: the tick's steps, each a
short method); the parts are small modules of their own:
what a due row records (run_planning), the ledger's statements (run_ledger), the message
(periodic_messages, erp.core.batch_publisher), `beat_schedule` entries (config_entries),
waking on changes (change_listener) and the heartbeat (heartbeat).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery
from celery.beat import Scheduler
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from erp.core.batch_publisher import BatchPublisher, OutgoingTask
from erp.core.config import get_settings
from erp.core.db import create_sync_engine, stall_limits
from erp.tasks import run_ledger, schedules
from erp.tasks.change_listener import ChangeListener
from erp.tasks.config_entries import sync_config_entries
from erp.tasks.heartbeat import Heartbeat
from erp.tasks.periodic_messages import outgoing_run, routing_problem
from erp.tasks.run_planning import plan_row
from erp.tasks.scheduler_models import BrokenScheduleError, PeriodicTaskDB, compute_next_run_at

logger = logging.getLogger(__name__)

# Rows planned per transaction: large enough to amortise the round trips, small enough that
# locks are held for well under a second.
BATCH_SIZE = 500
# Occurrences published per Redis round trip (and per ledger transaction).
PUBLISH_BATCH = 1000
MAX_BACKOFF_SECONDS = 30
# Missed deadlines are looked for at most this often; old ledger rows pruned this often, a
# small batch at a time, so pruning never holds a tick up.
DEADLINE_CHECK_EVERY_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 1000
# How soon to look again at rows another beat holds locked. It is sending them (gone in
# milliseconds) or it froze and PostgreSQL ends its session within the stall timeout; looking
# again at once would spin on the locks, hundreds of transactions a second.
HELD_ELSEWHERE_RECHECK_SECONDS = 1.0
# What a missing or failing Redis raises, through kombu or redis-py.
BROKER_ERRORS = (BrokerError, redis.RedisError, OSError)


class DatabaseScheduler(Scheduler):  # type: ignore[misc]
    """Celery Beat scheduler over the `periodic_tasks` table (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Celery also builds a throwaway instance (lazy=True) just to print `info`: keep this cheap.
        settings = get_settings()
        self.sync_every_seconds = settings.CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS
        self.grace_seconds = settings.CELERY_BEAT_MISFIRE_GRACE_SECONDS
        self.max_catch_up = settings.CELERY_BEAT_MAX_CATCH_UP_RUNS
        self.stall_timeout_seconds = settings.CELERY_BEAT_STALL_TIMEOUT_SECONDS
        self.ledger_retention = timedelta(days=settings.RUN_LEDGER_RETENTION_DAYS)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._engine: Engine | None = None
        self._listener: ChangeListener | None = None
        self._redis: redis.Redis | None = None
        self._publisher: BatchPublisher | None = None
        self._heartbeat = Heartbeat(self.instance)
        self._config_synced = False
        self._consecutive_failures = 0
        self._last_deadline_check = 0.0
        self._last_prune = 0.0
        # Due rows another beat held locked at the end of the last tick, as (id, next_run_at).
        self._held_elsewhere: set[tuple[int, datetime]] = set()
        self._runs_held_elsewhere: set[int] = set()
        super().__init__(*args, **kwargs)

    # --- Celery's Scheduler interface ---------------------------------------------------------

    def setup_schedule(self) -> None:
        settings = get_settings()
        self._engine = create_sync_engine(
            # The pid tells two beats apart in pg_stat_activity.
            f"erp-beat:{os.getpid()}",
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=0,
            connect_args=stall_limits(settings.CELERY_BEAT_STALL_TIMEOUT_SECONDS),
        )
        self._redis = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)
        self._publisher = BatchPublisher(self.app, self._redis)
        self._listener = ChangeListener(self._engine)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("DatabaseScheduler.setup_schedule has not run")
        return self._engine

    @property
    def publisher(self) -> BatchPublisher:
        if self._publisher is None:
            raise RuntimeError("DatabaseScheduler.setup_schedule has not run")
        return self._publisher

    @property
    def schedule(self) -> dict[str, Any]:
        # Schedules live in the database; there is no in-memory copy to show.
        return {}

    @property
    def info(self) -> str:
        url = make_url(get_settings().sync_database_url).render_as_string(hide_password=True)
        return f"    . db -> {url}"

    def sync(self) -> None:
        # Every change is committed as it happens; nothing to flush.
        pass

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._engine is not None:
            self._engine.dispose()
        if self._redis is not None:
            self._redis.close()
        super().close()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One round; returns 0 because the wait for the next round happens in here."""
        try:
            now = datetime.now(UTC)
            if not self._config_synced:
                sync_config_entries(self.engine, self.app.conf.beat_schedule or {}, str(self.app.conf.timezone))
                self._config_synced = True
            self.schedule_unscheduled(now)
            self.plan_due(now)
            self.release_held(now)
            self.publish_due(now)
            self._note_rows_held_elsewhere(now)
            self._look_after_ledger(now)
            self._heartbeat.record(self.engine)
            wait_seconds = self._seconds_until_next_run(now)
        except (OperationalError, InterfaceError) as error:
            return self._back_off("PostgreSQL is unavailable", error)
        except DBAPIError as error:
            # Not a connection problem: most often a schema older than the code.
            return self._back_off("database error (is the schema migrated? alembic upgrade head)", error)
        except BROKER_ERRORS as error:
            return self._back_off("Redis is unavailable", error)
        except Exception as error:  # nothing may stop beat; the next tick tries again
            logger.exception("beat: unexpected error in a tick", extra={"action": "tick_failed"})
            return self._back_off("unexpected error", error)
        if self._consecutive_failures:
            logger.info("beat: connection restored, scheduling resumed", extra={"action": "resumed"})
            self._consecutive_failures = 0
        if self._listener is not None:
            self._listener.wait(min(wait_seconds, self.sync_every_seconds))
        return 0

    # --- scheduling -------------------------------------------------------------------------

    def schedule_unscheduled(self, now: datetime) -> None:
        """Compute next_run_at for enabled rows that have none (new or changed schedules)."""
        with Session(self.engine) as session, session.begin():
            tasks = session.scalars(
                select(PeriodicTaskDB)
                .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at.is_(None))
                .limit(BATCH_SIZE)
                .with_for_update(of=PeriodicTaskDB, skip_locked=True)
            )
            for task in tasks:
                try:
                    task.next_run_at = compute_next_run_at(task, now)
                except (BrokenScheduleError, schedules.ScheduleError) as error:
                    _disable(session, task, f"broken schedule: {error}")
                    continue
                except Exception as error:  # whatever one row raises must not stop the others
                    logger.exception("beat: next run of %r not computable", task.name, extra={"action": "row_failed"})
                    _disable(session, task, f"broken schedule: {type(error).__name__}: {error}")
                    continue
                if task.next_run_at is None:
                    task.enabled, task.disabled_reason = False, "finished: the schedule has no further run"
                    logger.info("beat: periodic task %r finished", task.name, extra={"action": "row_finished"})

    def send_due(self, now: datetime) -> int:
        """Plan every due row and publish every due occurrence; returns how many were published."""
        self.plan_due(now)
        return self.publish_due(now)

    def plan_due(self, now: datetime) -> int:
        """Record the occurrences of every due row and advance the rows; returns runs planned."""
        planned_total = 0
        while True:
            planned, claimed = self._plan_batch(now)
            planned_total += planned
            if claimed < BATCH_SIZE:
                return planned_total

    def _plan_batch(self, now: datetime) -> tuple[int, int]:
        with Session(self.engine) as session, session.begin():
            tasks = session.scalars(
                select(PeriodicTaskDB)
                .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at <= now)
                .order_by(PeriodicTaskDB.next_run_at)
                .limit(BATCH_SIZE)
                .with_for_update(of=PeriodicTaskDB, skip_locked=True)
            ).all()
            if not tasks:
                return 0, 0
            self._note_takeover(tasks, now)
            busy, held = run_ledger.busy_tasks(session, [task.id for task in tasks if task.overlap_policy != "allow"])
            planned = [
                plan_row(
                    task,
                    now,
                    grace_seconds=self.grace_seconds,
                    max_catch_up=self.max_catch_up,
                    routing_problem=self._routing_problem,
                    has_unfinished=task.id in busy,
                    has_held=task.id in held,
                )
                for task in tasks
            ]
            run_ledger.record_occurrences(
                session, [occurrence for _, occurrences in planned for occurrence in occurrences], now
            )
            updates = [update for update, _ in planned]
            for task, update in zip(tasks, updates, strict=True):
                if not update.enabled and (update.disabled_reason or "").startswith("broken"):
                    _alert_stopped(session, task, update.disabled_reason or "")
            run_ledger.advance_rows(session, now, updates)
        return sum(update.runs_sent for update in updates), len(tasks)

    def publish_due(self, now: datetime) -> int:
        """Publish planned occurrences that are due, a batch per Redis round trip."""
        published_total = 0
        while True:
            with Session(self.engine) as session, session.begin():
                due = run_ledger.claim_due_runs(session, now, PUBLISH_BATCH)
                self._note_runs_taken_over(due, now)
                gone = [run.run_id for run in due if run.task is None]
                messages: list[OutgoingTask] = []
                sent: list[int] = []
                for run in due:
                    if run.task is None:
                        continue
                    try:
                        messages.append(outgoing_run(run.task, run_id=run.message_id, scheduled_at=run.scheduled_at))
                        sent.append(run.run_id)
                    except Exception as error:  # its row turned unusable since it was planned
                        logger.exception(
                            "beat: a run of %r could not be built", run.task.name, extra={"action": "row_failed"}
                        )
                        gone.append(run.run_id)
                        _disable(
                            session,
                            run.task,
                            f"broken: its message could not be built: {type(error).__name__}: {error}",
                        )
                self.publisher.publish(messages, now=now)
                run_ledger.mark_sent(session, sent, now)
                run_ledger.mark_revoked(session, gone, now)
            published_total += len(sent)
            self._heartbeat.count_sent(len(sent))
            if len(due) < PUBLISH_BATCH:
                return published_total

    def release_held(self, now: datetime) -> int:
        """Held occurrences (buffer_one) whose predecessors finished become planned."""
        with Session(self.engine) as session, session.begin():
            return run_ledger.release_held(session, now)

    def _look_after_ledger(self, now: datetime) -> None:
        """Flag missed deadlines and prune old rows, each at most so often and briefly."""
        clock = time.monotonic()
        with Session(self.engine) as session, session.begin():
            if clock - self._last_deadline_check >= DEADLINE_CHECK_EVERY_SECONDS:
                self._last_deadline_check = clock
                for missed in run_ledger.flag_missed_deadlines(session, now):
                    what = "did not start" if missed.kind == "start_deadline_missed" else "did not finish"
                    run_ledger.add_alert(
                        session,
                        missed.kind,
                        f"{missed.periodic_task_name}: the run of {missed.scheduled_at.isoformat()} {what}"
                        f" within {missed.seconds} s",
                        periodic_task_id=missed.periodic_task_id,
                        periodic_task_name=missed.periodic_task_name,
                        run_id=missed.run_id,
                    )
            if clock - self._last_prune >= PRUNE_EVERY_SECONDS:
                self._last_prune = clock
                run_ledger.prune(session, now, self.ledger_retention, PRUNE_BATCH)

    def _routing_problem(self, task: PeriodicTaskDB) -> str | None:
        return _cached_routing_problem(self.app, task.task, task.queue, task.exchange, task.routing_key)

    def _note_rows_held_elsewhere(self, now: datetime) -> None:
        """Remember the rows and the planned occurrences still due after this tick: another
        beat holds them locked (planning the rows, or publishing the occurrences)."""
        with self.engine.connect() as connection:
            held = connection.execute(
                select(PeriodicTaskDB.id, PeriodicTaskDB.next_run_at)
                .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at <= now)
                .limit(BATCH_SIZE)
            ).all()
            self._runs_held_elsewhere = set(run_ledger.planned_run_ids_due(connection, now, PUBLISH_BATCH))
        self._held_elsewhere = {(row.id, row.next_run_at) for row in held}

    def _note_runs_taken_over(self, due: Sequence[run_ledger.DueRun], now: datetime) -> None:
        """Say so when occurrences another beat held while publishing come to this beat.

        A healthy beat publishes what it planned within milliseconds; occurrences still held a
        tick later, then free, were held by a beat that froze or lost its host until PostgreSQL
        ended its session.
        """
        if not self._runs_held_elsewhere:
            return
        taken = [run for run in due if run.run_id in self._runs_held_elsewhere]
        if taken:
            logger.warning(
                "beat: took over %d occurrence(s) another beat held while publishing (it stopped answering)",
                len(taken),
                extra={"action": "runs_taken_over"},
            )

    def _note_takeover(self, tasks: Sequence[PeriodicTaskDB], now: datetime) -> None:
        """Say so when rows another beat held, at the same due time, come to this beat.

        A beat that merely planned them meanwhile has moved their next run on; one that froze
        or lost its host left them as they were until PostgreSQL ended its session.
        """
        if not self._held_elsewhere:
            return
        taken = [task for task in tasks if (task.id, task.next_run_at) in self._held_elsewhere]
        if taken:
            overdue = max((now - task.next_run_at).total_seconds() for task in taken if task.next_run_at)
            logger.warning(
                "beat: took over %d row(s) another beat held (it stopped answering); overdue by up to %.1f s",
                len(taken),
                overdue,
                extra={"action": "rows_taken_over"},
            )

    def _seconds_until_next_run(self, now: datetime) -> float:
        """Until the next row or occurrence falls due after this tick's `now`.

        Whatever was due at `now` and is still due after a whole tick is locked by another beat
        (`_note_rows_held_elsewhere` noted it): this beat looks at it again after
        HELD_ELSEWHERE_RECHECK_SECONDS, not at once.
        """
        next_run_at = PeriodicTaskDB.next_run_at
        with self.engine.connect() as connection:
            next_row_at = connection.execute(
                select(func.min(next_run_at)).where(PeriodicTaskDB.enabled, next_run_at > now)
            ).scalar()
            next_due_at = run_ledger.next_due_after(connection, now)
        moments = [moment for moment in (next_row_at, next_due_at) if moment is not None]
        wait = self.sync_every_seconds
        if moments:
            wait = max(0.0, (min(moments) - datetime.now(UTC)).total_seconds())
        if self._held_elsewhere or self._runs_held_elsewhere:
            wait = min(wait, HELD_ELSEWHERE_RECHECK_SECONDS)
        return wait

    def _back_off(self, what: str, error: Exception) -> float:
        self._consecutive_failures += 1
        delay = float(min(MAX_BACKOFF_SECONDS, 2 ** (self._consecutive_failures - 1)))
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.error("beat: %s (%s); retrying in %.0f s", what, first_line, delay, extra={"action": "back_off"})
        if self._listener is not None:
            self._listener.close()
        return delay


@functools.lru_cache(maxsize=4096)
def _cached_routing_problem(
    app: Celery, task_name: str, queue: str | None, exchange: str | None, routing_key: str | None
) -> str | None:
    # The app's queues do not change while beat runs: one answer per distinct routing.
    return routing_problem(app, task_name, queue=queue, exchange=exchange, routing_key=routing_key)


def _disable(session: Session, task: PeriodicTaskDB, reason: str) -> None:
    logger.warning("beat: periodic task %r disabled: %s", task.name, reason, extra={"action": "row_disabled"})
    task.enabled = False
    task.next_run_at = None
    task.disabled_reason = reason
    _alert_stopped(session, task, reason)


def _alert_stopped(session: Session, task: PeriodicTaskDB, reason: str) -> None:
    run_ledger.add_alert(
        session,
        "stopped_firing",
        f"{task.name}: stopped firing, {reason}",
        periodic_task_id=task.id,
        periodic_task_name=task.name,
    )
