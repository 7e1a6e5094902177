"""`DatabaseScheduler`: Celery Beat reading its schedules from PostgreSQL.

    celery -A erp.core.celery_app beat -S erp.tasks.db_scheduler.DatabaseScheduler

How a tick works (all in `tick`):
1. Rows whose `next_run_at` is NULL (new, or changed through plain SQL) get it computed.
2. What the broker lost is planned again (erp.tasks.beat.recovery): all sent before Redis lost
   its data, sent occurrences no longer in their queue, runs started by a worker that is gone.
   First, so that the marker telling Redis lost its data is there before the first message.
3. Plan: due rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` in batches; for each, its
   occurrences go into the run ledger (planned, held or skipped with a reason) and the row is
   advanced, in one short transaction per batch with no Redis in it. A batch's due occurrences
   are published from its rows in hand, on a thread of their own while the next batch is
   planned and before it commits (a herd's first message leaves at once; beat.background_sender).
   A second beat skips the locked rows. Redis away stops publishing, not planning.
4. Publish: planned occurrences whose time has come are locked, published in one Redis round
   trip per batch (erp.core.batch_publisher) and marked sent, in one transaction per batch. A
   beat that dies at any point leaves planned occurrences that the next tick of any beat
   publishes: none is lost. One published twice (a beat killed between publishing and
   committing) is dropped by the worker, which runs an occurrence only once (the ledger).
5. Held occurrences whose predecessors finished are released; missed deadlines are flagged
   (and alerted); old ledger rows are pruned in small batches.
6. Beat then waits for the next due time, or until a trigger NOTIFYs that a schedule changed,
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

This class keeps Celery's interface and the tick (the tick's steps, each a short method); the
parts are small modules of erp.tasks.beat: what a due row records (run_planning), the ledger's
statements (run_ledger), broken rows (broken_rows), `beat_schedule` entries (config_entries),
waking on changes (change_listener), the heartbeat, rows held by another beat (takeovers),
what the broker lost (recovery); and the message (periodic_messages).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery.beat import Scheduler
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from erp.core.batch_publisher import BatchPublisher
from erp.core.broker_wire import BROKER_ERRORS
from erp.core.config import get_settings
from erp.core.db import create_sync_engine, stall_limits
from erp.core.errors import error_text
from erp.tasks.beat import broken_rows, recovery, run_ledger, run_messages
from erp.tasks.beat.background_sender import BackgroundSender
from erp.tasks.beat.change_listener import ChangeListener
from erp.tasks.beat.config_entries import sync_config_entries
from erp.tasks.beat.heartbeat import Heartbeat
from erp.tasks.beat.run_messages import ReadyRun
from erp.tasks.beat.run_planning import plan_row
from erp.tasks.beat.takeovers import Takeovers
from erp.tasks.calendar import schedules
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
        self._sender = BackgroundSender()  # starts its thread when it first publishes
        self._heartbeat = Heartbeat(self.instance)
        self._config_synced = False
        self._consecutive_failures = 0
        self._last_deadline_check = 0.0
        self._last_prune = 0.0
        # Since when this beat's ticks succeed (monotonic); None after a failed one.
        self._healthy_since: float | None = None
        self._recovery: recovery.Recovery | None = None
        self._takeovers = Takeovers(
            self.instance,
            stall_timeout_seconds=self.stall_timeout_seconds,
            batch_size=BATCH_SIZE,
            publish_batch=PUBLISH_BATCH,
        )
        super().__init__(*args, **kwargs)

    # --- Celery's Scheduler interface ---------------------------------------------------------

    def setup_schedule(self) -> None:
        settings = get_settings()
        self._engine = create_sync_engine(
            # The pid tells two beats apart in pg_stat_activity. Connections: the change
            # listener's, the tick's and the background sender's.
            f"erp-beat:{os.getpid()}",
            pool_pre_ping=True,
            pool_size=3,
            max_overflow=0,
            connect_args=stall_limits(settings.CELERY_BEAT_STALL_TIMEOUT_SECONDS),
        )
        self._redis = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)
        self._publisher = BatchPublisher(self.app, self._redis)
        self._recovery = recovery.Recovery(self.app, self._redis, recovery.RecoveryLimits.from_settings(settings))
        self._listener = ChangeListener(self._engine)
        # What is loaded by now lives as long as beat: frozen out of the collector's sight, a herd's
        # many short-lived objects no longer make it walk all of it again (a tenth of a herd's time).
        gc.freeze()

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
        self._sender.close()
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
            if self._healthy_since is None:
                self._healthy_since = time.monotonic()
            if not self._config_synced:
                sync_config_entries(self.engine, self.app.conf.beat_schedule or {}, str(self.app.conf.timezone))
                self._config_synced = True
            self.schedule_unscheduled(now)
            # First: Redis must hold the marker of its data before this beat's first message (see
            # erp.tasks.beat.recovery). Redis away stops the publishing, not the planning.
            redis_away: Exception | None = None
            try:
                self.recover_lost(now)
            except BROKER_ERRORS as error:
                redis_away = error
            self.plan_due(now, publish=redis_away is None)
            self.release_held(now)
            if redis_away is not None:
                raise redis_away
            self.publish_due(now)
            self._takeovers.note_held(self.engine, now)
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
                    broken_rows.disable(session, task, f"broken schedule: {error}")
                    continue
                except Exception as error:  # whatever one row raises must not stop the others
                    logger.exception("beat: next run of %r not computable", task.name, extra={"action": "row_failed"})
                    broken_rows.disable(session, task, f"broken schedule: {type(error).__name__}: {error}")
                    continue
                if task.next_run_at is None:
                    task.enabled, task.disabled_reason = False, "finished: the schedule has no further run"
                    logger.info("beat: periodic task %r finished", task.name, extra={"action": "row_finished"})

    def send_due(self, now: datetime) -> int:
        """Plan every due row and publish every due occurrence; returns how many were published."""
        self.plan_due(now)
        return self.publish_due(now)

    def plan_due(self, now: datetime, *, publish: bool = False) -> int:
        """Record the occurrences of every due row and advance the rows; returns runs planned. With
        `publish`, a batch's due occurrences are published while the next is planned, before it is
        committed; Redis failing stops that, not the planning, and its error is raised at the end."""
        planned_total = 0
        sender = self._sender
        sender.broker_error = None
        try:
            while True:
                planned, claimed, ready = self._plan_batch(now, before_commit=sender.wait)
                planned_total += planned
                if publish and ready and sender.broker_error is None:
                    sender.send(functools.partial(self._publish_ready, now, ready))
                if claimed < BATCH_SIZE:
                    break
        finally:
            sender.wait()
        if sender.broker_error is not None:
            raise sender.broker_error
        return planned_total

    def _plan_batch(self, now: datetime, before_commit: Callable[[], None]) -> tuple[int, int, list[ReadyRun]]:
        """Plan up to BATCH_SIZE due rows; returns runs planned, rows claimed, and the due
        occurrences recorded, with their messages (built while the rows are in hand).
        `before_commit` waits for the previous batch's publishing."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            tasks = run_ledger.claim_due_rows(session, now, BATCH_SIZE)
            if not tasks:
                return 0, 0, []
            self._takeovers.note_rows(session, tasks, now)
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
            occurrences = [occurrence for _, occurrences in planned for occurrence in occurrences]
            recorded = run_ledger.record_occurrences(session, occurrences, now)
            ready = run_messages.just_planned(tasks, occurrences, recorded, now)
            updates = [update for update, _ in planned]
            for task, update in zip(tasks, updates, strict=True):
                if not update.enabled and (update.disabled_reason or "").startswith("broken"):
                    broken_rows.alert_stopped(session, task, update.disabled_reason or "")
            run_ledger.advance_rows(session, now, updates)
            before_commit()
        return sum(update.runs_sent for update in updates), len(tasks), ready

    def _publish_ready(self, now: datetime, ready: list[ReadyRun]) -> None:
        """Publish what this beat has just planned, claimed and marked sent in one statement."""
        with Session(self.engine) as session, session.begin():
            claimed = run_ledger.mark_sending(session, [run.run_id for run in ready], now)
            self.publisher.publish([run.message for run in ready if run.run_id in claimed], now=now)
        self._heartbeat.count_sent(len(claimed))

    def publish_due(self, now: datetime) -> int:
        """Publish planned occurrences that are due, a batch per Redis round trip."""
        published_total = 0
        while True:
            published, claimed = self._publish_batch(now)
            published_total += published
            if claimed < PUBLISH_BATCH:
                return published_total

    def _publish_batch(self, now: datetime) -> tuple[int, int]:
        """Publish up to PUBLISH_BATCH due occurrences; returns how many were sent and claimed."""
        with Session(self.engine) as session, session.begin():
            due = run_ledger.claim_due_runs(session, now, PUBLISH_BATCH)
            self._takeovers.note_runs(session, due, now)
            built = run_messages.read_back(session, due)
            sent = [run.run_id for run in built.ready]
            self.publisher.publish([run.message for run in built.ready], now=now)
            run_ledger.mark_sent(session, sent, now)
            run_ledger.mark_revoked(session, built.gone, now)
        self._heartbeat.count_sent(len(sent))
        return len(sent), len(due)

    def recover_lost(self, now: datetime) -> int:
        """Plan again what the broker lost (see erp.tasks.beat.recovery); returns how many."""
        if self._recovery is None:
            raise RuntimeError("DatabaseScheduler.setup_schedule has not run")
        healthy_for = time.monotonic() - (self._healthy_since or time.monotonic())
        return self._recovery.recover(self.engine, now, healthy_for=healthy_for)

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
                run_ledger.alert_missed_deadlines(session, now)
            if clock - self._last_prune >= PRUNE_EVERY_SECONDS:
                self._last_prune = clock
                run_ledger.prune(session, now, self.ledger_retention, PRUNE_BATCH)

    def _routing_problem(self, task: PeriodicTaskDB) -> str | None:
        return broken_rows.cached_routing_problem(self.app, task.task, task.queue, task.exchange, task.routing_key)

    def _seconds_until_next_run(self, now: datetime) -> float:
        """Until the next row or occurrence falls due after this tick's `now`.

        Whatever was due at `now` and is still due after a whole tick is locked by another beat
        (`Takeovers.note_held` noted it): this beat looks at it again after
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
        if self._takeovers.any_held:
            wait = min(wait, HELD_ELSEWHERE_RECHECK_SECONDS)
        return wait

    def _back_off(self, what: str, error: Exception) -> float:
        self._consecutive_failures += 1
        delay = float(min(MAX_BACKOFF_SECONDS, 2 ** (self._consecutive_failures - 1)))
        logger.error("beat: %s (%s); retrying in %.0f s", what, error_text(error), delay, extra={"action": "back_off"})
        self._takeovers.forget()
        self._healthy_since = None
        if self._listener is not None:
            self._listener.close()
        return delay
