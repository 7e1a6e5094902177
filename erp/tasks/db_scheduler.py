"""`DatabaseScheduler`: Celery Beat reading its schedules from PostgreSQL.

    celery -A erp.core.celery_app beat -S erp.tasks.db_scheduler.DatabaseScheduler

How a tick works (all in `tick`):
1. Rows whose `next_run_at` is NULL (new, or changed through plain SQL) get it computed.
2. Due rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` in batches, sent, and advanced
   (`next_run_at`, `last_run_at`, `total_run_count`) in the same transaction. A second beat
   skips the rows the first has locked and, once they are committed, no longer sees them as due.
3. Beat then waits for the next due time, or until a trigger NOTIFYs that a schedule changed,
   or `CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS`, whichever comes first.

Nothing is held in memory between ticks, so an edit is seen on the next tick and the cost of a
tick depends on what is due, not on the size of the table.

This class keeps Celery's interface and the tick; the parts are small modules of their own:
what a due row sends (run_planning), never sending a run twice (run_claims), the message
(periodic_messages), `beat_schedule` entries (config_entries), waking on changes
(change_listener) and the heartbeat (heartbeat).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
from celery.beat import Scheduler
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from erp.core.config import get_settings
from erp.core.db import create_sync_engine
from erp.tasks import schedules
from erp.tasks.change_listener import ChangeListener
from erp.tasks.config_entries import sync_config_entries
from erp.tasks.heartbeat import Heartbeat
from erp.tasks.periodic_messages import send_periodic_run
from erp.tasks.run_claims import RunClaims
from erp.tasks.run_planning import RowUpdate, Run, plan_row
from erp.tasks.scheduler_models import BrokenScheduleError, PeriodicTaskDB, compute_next_run_at

logger = logging.getLogger(__name__)

# Rows claimed per transaction: large enough to amortise the round trips, small enough that
# locks are held for well under a second.
BATCH_SIZE = 500
# Runs claimed and published per Redis round trip of claims. A claim per message would cost a
# fifth of the send rate.
CLAIM_CHUNK = 100
MAX_BACKOFF_SECONDS = 30
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
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._engine: Engine | None = None
        self._listener: ChangeListener | None = None
        self._claims: RunClaims | None = None
        self._redis: redis.Redis | None = None
        self._heartbeat = Heartbeat(self.instance)
        self._config_synced = False
        self._consecutive_failures = 0
        super().__init__(*args, **kwargs)

    # --- Celery's Scheduler interface ---------------------------------------------------------

    def setup_schedule(self) -> None:
        settings = get_settings()
        self._engine = create_sync_engine("erp-beat", pool_pre_ping=True, pool_size=2, max_overflow=0)
        self._redis = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)
        self._claims = RunClaims(self._redis, self.app, self.instance)
        self._listener = ChangeListener(self._engine)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("DatabaseScheduler.setup_schedule has not run")
        return self._engine

    @property
    def claims(self) -> RunClaims:
        if self._claims is None:
            raise RuntimeError("DatabaseScheduler.setup_schedule has not run")
        return self._claims

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
            self.send_due(now)
            self._heartbeat.record(self.engine)
            wait_seconds = self._seconds_until_next_run()
        except DBAPIError as error:
            return self._back_off("PostgreSQL is unavailable", error)
        except BROKER_ERRORS as error:
            return self._back_off("Redis is unavailable", error)
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
                    _disable(task, f"broken schedule: {error}")
                    continue
                if task.next_run_at is None:
                    _disable(task, "finished: the schedule has no further run")

    def send_due(self, now: datetime) -> int:
        """Send every due run, a batch per transaction; returns how many were sent."""
        sent_total = 0
        while True:
            sent, claimed = self._send_due_batch(now)
            sent_total += sent
            if claimed < BATCH_SIZE:
                return sent_total

    def _send_due_batch(self, now: datetime) -> tuple[int, int]:
        with Session(self.engine) as session, session.begin():
            tasks = session.scalars(
                select(PeriodicTaskDB)
                .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at <= now)
                .order_by(PeriodicTaskDB.next_run_at)
                .limit(BATCH_SIZE)
                .with_for_update(of=PeriodicTaskDB, skip_locked=True)
            ).all()
            planned = [
                plan_row(task, now, grace_seconds=self.grace_seconds, max_catch_up=self.max_catch_up) for task in tasks
            ]
            runs = [run for _, task_runs in planned for run in task_runs]
            out, broker_error = self._send_runs(runs)
            # A row advances only when every run it planned went out; otherwise it stays due
            # and the runs that did go out are recognised by their claims next time.
            updates = [update for update, task_runs in planned if all(run.id in out for run in task_runs)]
            _write_updates(session, now, updates)
        runs_sent = sum(update.runs_sent for update in updates)
        self._heartbeat.count_sent(runs_sent)
        if broker_error is not None:
            raise broker_error
        return runs_sent, len(tasks)

    def _send_runs(self, runs: list[Run]) -> tuple[set[str], Exception | None]:
        """Claim and publish runs in chunks; returns the ids that are out, and any broker error."""
        out: set[str] = set()
        for start in range(0, len(runs), CLAIM_CHUNK):
            chunk = runs[start : start + CLAIM_CHUNK]
            to_publish = self.claims.claim(list(chunk))
            publishing = {run.id for run in to_publish}
            out.update(run.id for run in chunk if run.id not in publishing)
            published: list[Run] = []
            try:
                for run in to_publish:
                    send_periodic_run(
                        self.app,
                        run.task,
                        run_id=run.id,
                        scheduled_at=run.scheduled_at,
                        args=run.args,
                        kwargs=run.kwargs,
                        producer=self.producer,
                    )
                    published.append(run)
            except BROKER_ERRORS as error:
                self.claims.release(to_publish[len(published) :])
                self.claims.mark_sent(published)
                out.update(run.id for run in published)
                return out, error
            self.claims.mark_sent(published)
            out.update(run.id for run in published)
        return out, None

    def _seconds_until_next_run(self) -> float:
        with self.engine.connect() as connection:
            next_run_at = connection.execute(
                select(func.min(PeriodicTaskDB.next_run_at)).where(PeriodicTaskDB.enabled)
            ).scalar()
        if next_run_at is None:
            return self.sync_every_seconds
        return max(0.0, (next_run_at - datetime.now(UTC)).total_seconds())

    def _back_off(self, what: str, error: Exception) -> float:
        self._consecutive_failures += 1
        delay = float(min(MAX_BACKOFF_SECONDS, 2 ** (self._consecutive_failures - 1)))
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.error("beat: %s (%s); retrying in %.0f s", what, first_line, delay, extra={"action": "back_off"})
        if self._listener is not None:
            self._listener.close()
        return delay


def _disable(task: PeriodicTaskDB, reason: str) -> None:
    logger.warning("beat: periodic task %r disabled: %s", task.name, reason, extra={"action": "row_disabled"})
    task.enabled = False
    task.next_run_at = None
    task.disabled_reason = reason


def _write_updates(session: Session, now: datetime, updates: list[RowUpdate]) -> None:
    if not updates:
        return
    # One statement for the whole batch: a round trip per row would cost more than the sends.
    session.execute(
        text(
            """
            UPDATE periodic_tasks AS t SET
                next_run_at = u.next_run_at,
                last_run_at = CASE WHEN u.runs_sent > 0 THEN :now ELSE t.last_run_at END,
                total_run_count = t.total_run_count + u.runs_sent,
                enabled = u.enabled,
                disabled_reason = u.disabled_reason
            FROM unnest(
                CAST(:ids AS bigint[]), CAST(:next_run_ats AS timestamptz[]), CAST(:runs_sent AS int[]),
                CAST(:enabled AS boolean[]), CAST(:reasons AS text[])
            ) AS u(id, next_run_at, runs_sent, enabled, disabled_reason)
            WHERE t.id = u.id
            """
        ),
        {
            "now": now,
            "ids": [u.id for u in updates],
            "next_run_ats": [u.next_run_at for u in updates],
            "runs_sent": [u.runs_sent for u in updates],
            "enabled": [u.enabled for u in updates],
            "reasons": [u.disabled_reason for u in updates],
        },
    )
