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

Faults. A row beat cannot use (a schedule it cannot compute, arguments it cannot decode,
routing that reaches no queue, anything else that row raises) is disabled with a readable
`disabled_reason`; the other rows go on, and no error stops beat: an unexpected one is logged and
the tick retried with back-off. A beat that freezes or loses its host inside a transaction has
its session ended by PostgreSQL after `CELERY_BEAT_STALL_TIMEOUT_SECONDS` (and a vanished
client is noticed by TCP keepalives), so its row locks go and another beat takes the rows over,
saying so in its log. Before each chunk it publishes, beat checks its transaction is still
alive, so a frozen beat that wakes up does not publish runs another beat has taken over.

This class keeps Celery's interface and the tick; the parts are small modules of their own:
what a due row sends (run_planning), never sending a run twice (run_claims), the message
(periodic_messages), `beat_schedule` entries (config_entries), waking on changes
(change_listener) and the heartbeat (heartbeat).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
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
from erp.tasks.periodic_messages import routing_problem, send_periodic_run
from erp.tasks.run_claims import RunClaims
from erp.tasks.run_planning import RowUpdate, Run, disabled, plan_row
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
        self.stall_timeout_seconds = settings.CELERY_BEAT_STALL_TIMEOUT_SECONDS
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._engine: Engine | None = None
        self._listener: ChangeListener | None = None
        self._claims: RunClaims | None = None
        self._redis: redis.Redis | None = None
        self._heartbeat = Heartbeat(self.instance)
        self._config_synced = False
        self._consecutive_failures = 0
        # Due rows another beat held locked at the end of the last tick, as (id, next_run_at).
        self._held_elsewhere: set[tuple[int, datetime]] = set()
        super().__init__(*args, **kwargs)

    # --- Celery's Scheduler interface ---------------------------------------------------------

    def setup_schedule(self) -> None:
        settings = get_settings()
        self._engine = create_sync_engine(
            "erp-beat",
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=0,
            connect_args=session_limits(settings.CELERY_BEAT_STALL_TIMEOUT_SECONDS),
        )
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
            self._note_rows_held_elsewhere(now)
            self._heartbeat.record(self.engine)
            wait_seconds = self._seconds_until_next_run()
        except DBAPIError as error:
            return self._back_off("PostgreSQL is unavailable", error)
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
                    _disable(task, f"broken schedule: {error}")
                    continue
                except Exception as error:  # whatever one row raises must not stop the others
                    logger.exception("beat: next run of %r not computable", task.name, extra={"action": "row_failed"})
                    _disable(task, f"broken schedule: {type(error).__name__}: {error}")
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
            self._note_takeover(tasks, now)
            planned = [
                plan_row(
                    task,
                    now,
                    grace_seconds=self.grace_seconds,
                    max_catch_up=self.max_catch_up,
                    routing_problem=self._routing_problem,
                )
                for task in tasks
            ]
            runs = [run for _, task_runs in planned for run in task_runs]
            out, failed, broker_error = self._send_runs(session, runs)
            # A row advances only when every run it planned went out; otherwise it stays due
            # and the runs that did go out are recognised by their claims next time. A row whose
            # message could not even be built is disabled with the reason.
            updates = [
                disabled(task, failed[task.id]) if task.id in failed else update
                for task, (update, task_runs) in zip(tasks, planned, strict=True)
                if task.id in failed or all(run.id in out for run in task_runs)
            ]
            _write_updates(session, now, updates)
        runs_sent = sum(update.runs_sent for update in updates)
        self._heartbeat.count_sent(runs_sent)
        if broker_error is not None:
            raise broker_error
        return runs_sent, len(tasks)

    def _send_runs(self, session: Session, runs: list[Run]) -> tuple[set[str], dict[int, str], Exception | None]:
        """Claim and publish runs in chunks.

        Returns the ids of the runs that are out, the rows whose message could not be built
        (row id -> reason), and the broker error that stopped the sending, if any.
        """
        out: set[str] = set()
        failed: dict[int, str] = {}
        for start in range(0, len(runs), CLAIM_CHUNK):
            # Still holding the rows? A beat frozen past the stall timeout has lost them to
            # another beat, and must not publish what that beat has sent since.
            session.execute(text("SELECT 1"))
            chunk = [run for run in runs[start : start + CLAIM_CHUNK] if run.task.id not in failed]
            to_publish = self.claims.claim(chunk)
            publishing = {run.id for run in to_publish}
            out.update(run.id for run in chunk if run.id not in publishing)
            published: list[Run] = []
            unsent: list[Run] = []
            for position, run in enumerate(to_publish):
                try:
                    self._publish(run)
                except BROKER_ERRORS as error:
                    self.claims.release([*unsent, *to_publish[position:]])
                    self.claims.mark_sent(published)
                    out.update(run.id for run in published)
                    return out, failed, error
                except Exception as error:  # a message this row cannot make; the others go on
                    logger.exception(
                        "beat: a run of %r could not be sent", run.task.name, extra={"action": "row_failed"}
                    )
                    failed[run.task.id] = f"broken: its message could not be sent: {type(error).__name__}: {error}"
                    unsent.append(run)
                    continue
                published.append(run)
            self.claims.release(unsent)
            self.claims.mark_sent(published)
            out.update(run.id for run in published)
        return out, failed, None

    def _publish(self, run: Run) -> None:
        send_periodic_run(
            self.app,
            run.task,
            run_id=run.id,
            scheduled_at=run.scheduled_at,
            args=run.args,
            kwargs=run.kwargs,
            producer=self.producer,
        )

    def _routing_problem(self, task: PeriodicTaskDB) -> str | None:
        return _cached_routing_problem(self.app, task.task, task.queue, task.exchange, task.routing_key)

    def _note_rows_held_elsewhere(self, now: datetime) -> None:
        """Remember the rows still due after this tick: another beat holds them locked."""
        with self.engine.connect() as connection:
            held = connection.execute(
                select(PeriodicTaskDB.id, PeriodicTaskDB.next_run_at)
                .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at <= now)
                .limit(BATCH_SIZE)
            ).all()
        self._held_elsewhere = {(row.id, row.next_run_at) for row in held}

    def _note_takeover(self, tasks: Sequence[PeriodicTaskDB], now: datetime) -> None:
        """Say so when rows another beat held, at the same due time, come to this beat.

        A beat that merely sent them meanwhile has moved their next run on; one that froze or
        lost its host left them as they were until PostgreSQL ended its session.
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


def session_limits(stall_timeout_seconds: int) -> dict[str, Any]:
    """libpq connection options that keep a frozen or vanished beat from holding rows for long.

    PostgreSQL ends a session idle inside a transaction for longer than the stall timeout (a
    frozen beat), and the keepalives make both sides notice a host that is gone within about
    twenty seconds (the defaults would take over two hours). Beat's statements are short: one
    running longer than a minute is stuck, not busy.
    """
    server_settings = {
        "idle_in_transaction_session_timeout": stall_timeout_seconds * 1000,
        "statement_timeout": 60_000,
        "tcp_keepalives_idle": 10,
        "tcp_keepalives_interval": 5,
        "tcp_keepalives_count": 3,
    }
    return {
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "options": " ".join(f"-c {name}={value}" for name, value in server_settings.items()),
    }


@functools.lru_cache(maxsize=4096)
def _cached_routing_problem(
    app: Celery, task_name: str, queue: str | None, exchange: str | None, routing_key: str | None
) -> str | None:
    # The app's queues do not change while beat runs: one answer per distinct routing.
    return routing_problem(app, task_name, queue=queue, exchange=exchange, routing_key=routing_key)


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
