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

Never the same run twice: every run's message id is derived from the periodic task and its
scheduled time (`periodic_run_id`), and before publishing beat claims that id in Redis with
SET NX. If a commit fails after the publish (or a second beat got the row after a crash), the
next attempt finds the id claimed and only advances the row. A beat killed inside the
publish call itself can lose that one run; it never sends it twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from select import select as wait_until_readable

import redis
from celery.beat import Scheduler
from celery.result import denied_join_result
from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_schedule
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from erp.core.config import settings
from erp.core.db import create_sync_engine
from erp.tasks import schedules
from erp.tasks.scheduler_models import (
    BeatHeartbeatDB,
    BrokenScheduleError,
    CrontabScheduleDB,
    IntervalScheduleDB,
    PeriodicTaskDB,
    compute_next_run_at,
)

logger = logging.getLogger(__name__)

# Rows claimed per transaction: large enough to amortise the round trips, small enough that
# locks are held for well under a second.
BATCH_SIZE = 500
HEARTBEAT_EVERY_SECONDS = 5
# A claimed run id is kept this long: longer than any commit retry, short enough to expire.
RUN_CLAIM_TTL_SECONDS = 24 * 3600
# Runs claimed per Redis round trip. A claim per message would cost a fifth of the send rate.
CLAIM_CHUNK = 100
MAX_BACKOFF_SECONDS = 30
NOTIFY_CHANNEL = "erp_periodic_tasks"

PERIODIC_RUN_NAMESPACE = uuid.UUID("3f1d6c2e-8a57-4b0e-9d7e-6f2b9c4a1e55")


def periodic_run_id(periodic_task_id: int, scheduled_at: datetime) -> str:
    """The message id of one scheduled run: the same task and time always give the same id."""
    moment = scheduled_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(uuid.uuid5(PERIODIC_RUN_NAMESPACE, f"{periodic_task_id}@{moment}"))


@dataclass
class _Run:
    """One scheduled run of a periodic task, about to be sent."""

    task: PeriodicTaskDB
    scheduled_at: datetime
    args: list
    kwargs: dict
    id: str = field(init=False)
    claim_key: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = periodic_run_id(self.task.id, self.scheduled_at)
        self.claim_key = f"erp:beat:run:{self.id}"


@dataclass
class _RowUpdate:
    id: int
    next_run_at: datetime | None
    runs_sent: int
    enabled: bool
    disabled_reason: str | None


class DatabaseScheduler(Scheduler):
    """Celery Beat scheduler over the `periodic_tasks` table (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        # Celery also builds a throwaway instance (lazy=True) just to print `info`: keep this cheap.
        self.engine: Engine | None = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sync_every_seconds = settings.CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS
        self._listener = None
        self._run_claims: redis.Redis | None = None
        self._config_synced = False
        self._consecutive_failures = 0
        self._last_heartbeat = 0.0
        self._unreported_runs = 0
        self._started_at = datetime.now(timezone.utc)
        super().__init__(*args, **kwargs)

    # --- Celery's Scheduler interface ---------------------------------------------------------

    def setup_schedule(self) -> None:
        self.engine = create_sync_engine("erp-beat", pool_pre_ping=True, pool_size=2, max_overflow=0)
        self._run_claims = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)

    @property
    def schedule(self) -> dict:
        # Schedules live in the database; there is no in-memory copy to show.
        return {}

    @property
    def info(self) -> str:
        return f"    . db -> {make_url(settings.sync_database_url).render_as_string(hide_password=True)}"

    def sync(self) -> None:
        # Every change is committed as it happens; nothing to flush.
        pass

    def close(self) -> None:
        self._close_listener()
        if self.engine is not None:
            self.engine.dispose()
        if self._run_claims is not None:
            self._run_claims.close()
        super().close()

    def tick(self, *args, **kwargs) -> float:
        """One round; returns 0 because the wait for the next round happens in here."""
        try:
            now = datetime.now(timezone.utc)
            if not self._config_synced:
                self.sync_config_entries()
                self._config_synced = True
            self.schedule_unscheduled(now)
            self.send_due(now)
            self._record_heartbeat()
            wait_seconds = self._seconds_until_next_run()
        except DBAPIError as error:
            return self._back_off("PostgreSQL is unavailable", error)
        except (BrokerError, redis.RedisError, OSError) as error:
            return self._back_off("Redis is unavailable", error)
        if self._consecutive_failures:
            logger.info("beat: connection restored, scheduling resumed")
            self._consecutive_failures = 0
        self._wait_for_change(min(wait_seconds, self.sync_every_seconds))
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
                    self._disable(task, f"broken schedule: {error}")
                    continue
                if task.next_run_at is None:
                    self._disable(task, "finished: the schedule has no further run")

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
            planned = [self._plan(task, now) for task in tasks]
            runs = [run for _, task_runs in planned for run in task_runs]
            out, broker_error = self._send_runs(runs)
            # A row advances only when every run it planned went out; otherwise it stays due
            # and the runs that did go out are recognised by their claims next time.
            updates = [update for update, task_runs in planned if all(run.id in out for run in task_runs)]
            self._write_updates(session, now, updates)
        runs_sent = sum(update.runs_sent for update in updates)
        self._unreported_runs += runs_sent
        if broker_error is not None:
            raise broker_error
        return runs_sent, len(tasks)

    def _plan(self, task: PeriodicTaskDB, now: datetime) -> tuple[_RowUpdate, list[_Run]]:
        """What to send for a due row, and how the row changes once it is sent."""
        try:
            spec = task.get_schedule()
            args, kwargs = task.get_args(), task.get_kwargs()
            plan = schedules.plan_runs(
                spec,
                next_run_at=task.next_run_at,
                now=now,
                misfire_policy=task.misfire_policy,
                grace_seconds=settings.CELERY_BEAT_MISFIRE_GRACE_SECONDS,
                max_catch_up=settings.CELERY_BEAT_MAX_CATCH_UP_RUNS,
                expires=task.expires,
            )
        except (BrokenScheduleError, schedules.ScheduleError) as error:
            logger.error("beat: periodic task %r disabled: %s", task.name, error)
            return _RowUpdate(task.id, task.next_run_at, 0, False, f"broken: {error}"), []
        runs = [_Run(task, scheduled_at, args, kwargs) for scheduled_at in plan.send]
        if task.expires is not None and now >= task.expires:
            update = _RowUpdate(task.id, None, len(runs), False, f"expired at {task.expires.isoformat()}")
        elif plan.next_run_at is None or (task.one_off and runs):
            update = _RowUpdate(task.id, None, len(runs), False, "finished: ran its last scheduled run")
        else:
            update = _RowUpdate(task.id, plan.next_run_at, len(runs), True, None)
        return update, runs

    def _send_runs(self, runs: list[_Run]) -> tuple[set[str], Exception | None]:
        """Claim and publish runs in chunks; returns the ids that are out, and any broker error.

        A claim is "pending" from just before the publish until "sent" just after it, each
        written for a whole chunk in one round trip. A run found claimed "sent" is out. One
        found "pending" was claimed by a beat that died mid-chunk: it is out if its message is
        in the queue, unacked or has a result; if not, it is sent now. So a crash neither
        repeats nor loses a run.
        """
        out: set[str] = set()
        recognised = 0
        for start in range(0, len(runs), CLAIM_CHUNK):
            chunk = runs[start : start + CLAIM_CHUNK]
            pipeline = self._run_claims.pipeline(transaction=False)
            for run in chunk:
                pipeline.set(run.claim_key, f"pending:{self.instance}", nx=True, ex=RUN_CLAIM_TTL_SECONDS)
            to_publish = []
            for run, claimed in zip(chunk, pipeline.execute()):
                if claimed or not self._already_out(run):
                    to_publish.append(run)
                else:
                    out.add(run.id)
                    recognised += 1
            published: list[_Run] = []
            try:
                for run in to_publish:
                    self._publish(run)
                    published.append(run)
            except (BrokerError, redis.RedisError, OSError) as error:
                self._release_claims(to_publish[len(published) :])
                self._mark_sent(published)
                out.update(run.id for run in published)
                return out, error
            self._mark_sent(published)
            out.update(run.id for run in published)
        if recognised:
            logger.warning("beat: %d run(s) had already been sent (by a beat that stopped); not sent again", recognised)
        return out, None

    def _publish(self, run: _Run) -> None:
        task = run.task
        headers = {
            **(task.headers or {}),
            "periodic_task_name": task.name,
            "periodic_task_scheduled_at": run.scheduled_at.isoformat(),
        }
        # Beat never waits on a result. Saying so keeps Celery's Redis backend from subscribing
        # to every run's result (celery#4261): a round trip per run, and an unsubscribe in
        # AsyncResult.__del__ that could swallow the SystemExit of beat's SIGTERM handler.
        with denied_join_result():
            self.app.send_task(
                task.task,
                args=run.args,
                kwargs=run.kwargs,
                task_id=run.id,
                headers=headers,
                producer=self.producer,
                **task.message_options(),
            )

    def _mark_sent(self, runs: list[_Run]) -> None:
        if not runs:
            return
        try:
            pipeline = self._run_claims.pipeline(transaction=False)
            for run in runs:
                pipeline.set(run.claim_key, "sent", xx=True, keepttl=True)
            pipeline.execute()
        except redis.RedisError as error:
            # Left "pending": a later attempt finds the messages and does not resend them.
            logger.warning("beat: could not mark %d sent run(s) (%s)", len(runs), error)

    def _release_claims(self, runs: list[_Run]) -> None:
        if runs:
            try:
                self._run_claims.delete(*(run.claim_key for run in runs))
            except redis.RedisError:
                pass  # Redis is down; a "pending" claim is checked against the queue anyway.

    def _already_out(self, run: _Run) -> bool:
        """For a run someone already claimed: did its message leave?"""
        claim = self._run_claims.get(run.claim_key)
        if claim is None or claim == b"sent":
            return claim is not None
        backend = self.app.backend
        if backend.get(backend.get_key_for_task(run.id)) is not None:
            return True
        needle = run.id.encode()
        queue = run.task.queue or self.app.conf.task_default_queue
        # kombu keeps priority levels in sibling lists and reserved messages in "unacked".
        for key in (queue, *(f"{queue}\x06\x16{priority}" for priority in (3, 6, 9))):
            if any(needle in message for message in self._run_claims.lrange(key, 0, -1)):
                return True
        return any(needle in message for message in self._run_claims.hvals("unacked"))

    def _write_updates(self, session: Session, now: datetime, updates: list[_RowUpdate]) -> None:
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

    @staticmethod
    def _disable(task: PeriodicTaskDB, reason: str) -> None:
        logger.warning("beat: periodic task %r disabled: %s", task.name, reason)
        task.enabled = False
        task.next_run_at = None
        task.disabled_reason = reason

    def _seconds_until_next_run(self) -> float:
        with self.engine.connect() as connection:
            next_run_at = connection.execute(
                select(func.min(PeriodicTaskDB.next_run_at)).where(PeriodicTaskDB.enabled)
            ).scalar()
        if next_run_at is None:
            return self.sync_every_seconds
        return max(0.0, (next_run_at - datetime.now(timezone.utc)).total_seconds())

    # --- schedules from the beat_schedule setting ---------------------------------------------

    def sync_config_entries(self) -> None:
        """Mirror `beat_schedule` into the table (from_config rows); keep admins' enabled flag."""
        entries = self.app.conf.beat_schedule or {}
        with Session(self.engine) as session, session.begin():
            for name, entry in entries.items():
                self._upsert_config_entry(session, name, entry)
            removed = session.execute(
                delete(PeriodicTaskDB).where(PeriodicTaskDB.from_config, PeriodicTaskDB.name.not_in(list(entries)))
            ).rowcount
        if removed:
            logger.info("beat: removed %d schedule(s) no longer in beat_schedule", removed)

    def _upsert_config_entry(self, session: Session, name: str, entry: dict) -> None:
        schedule_columns = _config_schedule_columns(session, entry["schedule"])
        if schedule_columns is None:
            logger.warning("beat: beat_schedule entry %r has a schedule type the database cannot store; skipped", name)
            return
        options = entry.get("options", {})
        values = {
            "task": entry["task"],
            "args": list(entry.get("args", ())),
            "kwargs": dict(entry.get("kwargs", {})),
            "queue": options.get("queue"),
            "exchange": options.get("exchange"),
            "routing_key": options.get("routing_key"),
            "priority": options.get("priority"),
            "expire_seconds": options.get("expires") if isinstance(options.get("expires"), int) else None,
            "interval_id": None,
            "crontab_id": None,
            "clocked_id": None,
            "solar_id": None,
            **schedule_columns,
        }
        existing = session.scalar(select(PeriodicTaskDB).where(PeriodicTaskDB.name == name))
        if existing is None:
            # Two beats starting together may both insert: the name is unique, the loser does nothing.
            session.execute(
                insert(PeriodicTaskDB)
                .values(name=name, from_config=True, description="from the beat_schedule setting", **values)
                .on_conflict_do_nothing(index_elements=["name"])
            )
        elif not existing.from_config:
            logger.warning("beat: beat_schedule entry %r clashes with a task created through the API; skipped", name)
        elif any(getattr(existing, column) != value for column, value in values.items()):
            for column, value in values.items():
                setattr(existing, column, value)
            existing.next_run_at = None

    # --- heartbeat, change notifications, failures ----------------------------------------------

    def _record_heartbeat(self) -> None:
        if time.monotonic() - self._last_heartbeat < HEARTBEAT_EVERY_SECONDS:
            return
        now = datetime.now(timezone.utc)
        with self.engine.begin() as connection:
            connection.execute(
                insert(BeatHeartbeatDB)
                .values(
                    instance=self.instance,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=self._started_at,
                    last_tick_at=now,
                    runs_sent=self._unreported_runs,
                )
                .on_conflict_do_update(
                    index_elements=["instance"],
                    set_={"last_tick_at": now, "runs_sent": BeatHeartbeatDB.runs_sent + self._unreported_runs},
                )
            )
            # Rows of beats that stopped long ago tell nobody anything.
            connection.execute(delete(BeatHeartbeatDB).where(BeatHeartbeatDB.last_tick_at < now - timedelta(days=1)))
        self._unreported_runs = 0
        self._last_heartbeat = time.monotonic()

    def _wait_for_change(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when a trigger NOTIFYs a schedule change."""
        if seconds <= 0:
            return
        try:
            listener = self._ensure_listener()
            if wait_until_readable([listener], [], [], seconds)[0]:
                listener.poll()
                listener.notifies.clear()
        except Exception as error:  # noqa: BLE001 - any listener failure falls back to sleeping
            # The listener is only a shortcut; the next tick reconnects it.
            logger.warning("beat: change listener failed (%s); polling every %.1f s instead", error, seconds)
            self._close_listener()
            time.sleep(seconds)

    def _ensure_listener(self):
        if self._listener is None:
            connection = self.engine.raw_connection()
            connection.driver_connection.set_session(autocommit=True)
            connection.driver_connection.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listener = connection
        return self._listener.driver_connection

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.invalidate()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass
            self._listener = None

    def _back_off(self, what: str, error: Exception) -> float:
        self._consecutive_failures += 1
        delay = min(MAX_BACKOFF_SECONDS, 2 ** (self._consecutive_failures - 1))
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.error("beat: %s (%s); retrying in %d s", what, first_line, delay)
        self._close_listener()
        return delay


def _config_schedule_columns(session: Session, schedule) -> dict | None:
    """The schedule foreign key for a beat_schedule entry, reusing an identical schedule row."""
    if isinstance(schedule, (int, float, timedelta)):
        schedule = celery_schedule(schedule)
    if isinstance(schedule, celery_crontab):
        fields = {
            "minute": schedule._orig_minute,
            "hour": schedule._orig_hour,
            "day_of_week": schedule._orig_day_of_week,
            "day_of_month": schedule._orig_day_of_month,
            "month_of_year": schedule._orig_month_of_year,
            "timezone": str(schedule.tz or settings.TIME_ZONE),
        }
        fields = {key: str(value) for key, value in fields.items()}
        return {"crontab_id": _get_or_create(session, CrontabScheduleDB, fields).id}
    if type(schedule) is celery_schedule:
        seconds = schedule.run_every.total_seconds()
        if seconds.is_integer():
            fields = {"every": int(seconds), "period": "seconds"}
        else:
            fields = {"every": int(schedule.run_every / timedelta(microseconds=1)), "period": "microseconds"}
        return {"interval_id": _get_or_create(session, IntervalScheduleDB, fields).id}
    return None


def _get_or_create(session: Session, model, fields: dict):
    row = session.scalars(select(model).filter_by(**fields).limit(1)).first()
    if row is None:
        row = model(**fields)
        session.add(row)
        session.flush()
    return row
