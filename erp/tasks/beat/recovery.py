"""The ledger as the source of truth for what must still run: beat sends again what was lost.

A sent occurrence lives in Redis until a worker acknowledges it. Redis can lose it: a Redis
without persistence restarted (or flushed, or failed over) comes back empty; a worker killed
while it held the message leaves it unacknowledged in Redis until the visibility timeout (twice
the hard time limit, 12 minutes by default); a worker killed while it ran the occurrence
leaves it `started` for ever. Each tick beat looks for these, cheaply, and puts them back to
`planned`, due at once; the same tick publishes them with their own message id. A copy that
was not lost after all is dropped by the worker's run guard: the occurrence still runs once.

1. Redis lost its data. Beat keeps a marker in the broker database (`EPOCH_KEY`, no expiry). A
   marker that is missing, or not the one this beat saw last, means Redis lost everything:
   every occurrence sent before that was noticed and not started yet goes out again at once.
   The first beat to notice writes a new marker with the time it noticed, so a second beat
   sends again only what was sent before then, not what the first one has just sent.
2. A message held by a worker that died, or otherwise gone: an occurrence `sent` more than
   RUN_LEDGER_RESEND_AFTER_SECONDS ago and not started, while its queue is empty (nothing
   waits ahead of it), is no longer where a worker will find it.
3. A worker that died mid-run: an occurrence `started` by a process that is gone
   (erp.tasks.worker_heartbeats) runs again, within WORKER_LOST_AFTER_SECONDS and a tick. Not
   while beat itself has been cut off from PostgreSQL for less than that: the heartbeats could
   not be written either.

Each occurrence is published at most RUN_LEDGER_MAX_ATTEMPTS times: one that would need more
is failed with the reason and an alert, never left `sent` in silence.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import redis
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from erp.core import broker_wire
from erp.core.batch_publisher import routed_queue
from erp.core.config import Settings
from erp.tasks.beat import run_ledger
from erp.tasks.worker_heartbeats import WORKER_GONE_SQL

logger = logging.getLogger(__name__)

EPOCH_KEY = "erp:broker-epoch"
# Occurrences looked at per tick for each rule; the rest wait for the next tick.
RECOVERY_BATCH = 1000


# Whether Redis lost its data is asked at most this often (one GET); the other rules, each a
# query over the unfinished occurrences, at most this often.
EPOCH_CHECK_EVERY_SECONDS = 1.0
RECOVERY_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class RecoveryLimits:
    resend_after_seconds: float
    worker_lost_after_seconds: float
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RecoveryLimits:
        return cls(
            resend_after_seconds=settings.RUN_LEDGER_RESEND_AFTER_SECONDS,
            worker_lost_after_seconds=settings.WORKER_LOST_AFTER_SECONDS,
            max_attempts=settings.RUN_LEDGER_MAX_ATTEMPTS,
        )


class Recovery:
    """The three rules, as one beat applies them from its tick, each at most so often."""

    def __init__(
        self,
        app: Celery,
        client: redis.Redis,
        limits: RecoveryLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.client = client
        self.limits = limits
        self.epoch = BrokerEpoch(client)
        self._clock = clock
        self._last_epoch_check: float | None = None
        self._last_recovery: float | None = None

    def recover(self, engine: Engine, now: datetime, *, healthy_for: float) -> int:
        """Plan again what was lost; returns how many. `healthy_for`: how long the asking
        beat has ticked without a fault."""
        clock = self._clock()
        noticed_at = None
        if self._last_epoch_check is None or clock - self._last_epoch_check >= EPOCH_CHECK_EVERY_SECONDS:
            self._last_epoch_check = clock
            noticed_at = self.epoch.loss_noticed_at(now)
        recover = self._last_recovery is None or clock - self._last_recovery >= RECOVERY_EVERY_SECONDS
        if noticed_at is None and not recover:
            return 0
        planned_again = 0
        with Session(engine) as session, session.begin():
            if noticed_at is not None:
                logger.warning(
                    "beat: Redis lost its data (noticed at %s); what was sent before and not started goes again",
                    noticed_at.isoformat(),
                    extra={"action": "broker_data_lost"},
                )
                planned_again += resend_after_loss(session, now, noticed_at, self.limits)
            if recover:
                self._last_recovery = clock
                planned_again += resend_stale(session, self.app, self.client, now, self.limits)
                # Workers could not write their heartbeats while this beat could not reach
                # PostgreSQL either: judge them only once it has been up for as long.
                if healthy_for >= self.limits.worker_lost_after_seconds:
                    planned_again += rerun_lost_workers(session, now, self.limits)
        return planned_again


class BrokerEpoch:
    """The marker that tells a Redis that kept its data from one that lost it."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._seen: bytes | None = None

    def loss_noticed_at(self, now: datetime) -> datetime | None:
        """When the loss of Redis's data was first noticed, if it happened since the last call."""
        value = cast(bytes | None, self._client.get(EPOCH_KEY))
        lost = value is None or (self._seen is not None and value != self._seen)
        if value is None:
            marker = json.dumps({"epoch": uuid.uuid4().hex, "noticed_at": now.isoformat()})
            self._client.set(EPOCH_KEY, marker, nx=True)
            value = cast(bytes | None, self._client.get(EPOCH_KEY))
        self._seen = value
        if not lost or value is None:
            return None
        try:
            return datetime.fromisoformat(json.loads(value)["noticed_at"])
        except (ValueError, KeyError, TypeError):
            return now  # a marker written by hand: everything sent so far


def resend_after_loss(session: Session, now: datetime, noticed_at: datetime, limits: RecoveryLimits) -> int:
    """Rule 1: whatever was sent (or was waiting to be retried) before Redis lost it goes again."""
    return _replan(
        session,
        now,
        "r.state IN ('sent', 'retried') AND r.sent_at < :noticed_at",
        {"noticed_at": noticed_at},
        limits,
        "its message was lost with Redis's data",
    )


def resend_stale(session: Session, app: Celery, client: redis.Redis, now: datetime, limits: RecoveryLimits) -> int:
    """Rule 2: sent long ago, not started, and its queue is empty."""
    rows = session.execute(
        text(
            """
            SELECT r.id, t.task, t.queue FROM periodic_task_runs AS r
            JOIN periodic_tasks AS t ON t.id = r.periodic_task_id
            WHERE r.state = 'sent' AND r.sent_at < :now - make_interval(secs => :after)
            ORDER BY r.sent_at LIMIT :limit
            """
        ),
        {"now": now, "after": limits.resend_after_seconds, "limit": RECOVERY_BATCH},
    ).all()
    if not rows:
        return 0
    queues = {row.id: _queue_name(app, row.task, row.queue) for row in rows}
    names = sorted({name for name in queues.values() if name is not None})
    pipeline = client.pipeline(transaction=False)
    for name in names:
        for key in broker_wire.queue_keys(name):
            pipeline.llen(key)
    lengths = iter(pipeline.execute())
    waiting = {name: sum(next(lengths) for _ in broker_wire.queue_keys(name)) for name in names}
    lost = [run_id for run_id, name in queues.items() if name is not None and waiting[name] == 0]
    if not lost:
        return 0
    return _replan(
        session,
        now,
        "r.id = ANY(:ids) AND r.state = 'sent'",
        {"ids": lost},
        limits,
        "its message was not started and is no longer in its queue",
    )


def rerun_lost_workers(session: Session, now: datetime, limits: RecoveryLimits) -> int:
    """Rule 3: started by a process that is gone."""
    return _replan(
        session,
        now,
        f"r.state = 'started' AND r.worker IS NOT NULL AND {WORKER_GONE_SQL}",
        {"lost_after": limits.worker_lost_after_seconds},
        limits,
        "the worker that started it is gone",
    )


def _replan(
    session: Session, now: datetime, condition: str, params: dict[str, object], limits: RecoveryLimits, why: str
) -> int:
    """Back to planned, due now (published by this tick); past the attempts: failed, alerted."""
    rows = session.execute(
        text(
            f"""
            WITH found AS (
                SELECT r.id FROM periodic_task_runs AS r WHERE {condition}
                ORDER BY r.id LIMIT :limit FOR UPDATE SKIP LOCKED
            )
            UPDATE periodic_task_runs AS r SET
                state = CASE WHEN r.publish_count >= :max_attempts THEN 'failed' ELSE 'planned' END,
                due_at = :now,
                finished_at = CASE WHEN r.publish_count >= :max_attempts THEN :now END,
                error_type = CASE WHEN r.publish_count >= :max_attempts THEN 'NotRun' ELSE r.error_type END,
                error_message = CASE WHEN r.publish_count >= :max_attempts
                    THEN 'sent ' || r.publish_count || ' times without an outcome; the last time ' || :why
                    ELSE r.error_message END
            FROM found WHERE r.id = found.id
            RETURNING r.id, r.state, r.periodic_task_id, r.periodic_task_name, r.message_id, r.error_message
            """
        ),
        {**params, "now": now, "limit": RECOVERY_BATCH, "max_attempts": limits.max_attempts, "why": why},
    ).all()
    failed = [row for row in rows if row.state == "failed"]
    for row in failed:
        run_ledger.add_alert(
            session,
            "failure",
            f"{row.periodic_task_name}: the run {row.message_id} failed: {row.error_message}",
            periodic_task_id=row.periodic_task_id,
            periodic_task_name=row.periodic_task_name,
            run_id=row.id,
        )
    again = len(rows) - len(failed)
    if again:
        logger.warning(
            "beat: sending %d occurrence(s) again: %s", again, why, extra={"action": "runs_resent", "reason": why}
        )
    if failed:
        logger.error(
            "beat: %d occurrence(s) failed: sent %d times without an outcome (%s)",
            len(failed),
            limits.max_attempts,
            why,
            extra={"action": "runs_not_run"},
        )
    return again


def _queue_name(app: Celery, task_name: str, queue: str | None) -> str | None:
    target = routed_queue(app, task_name, queue)
    return target.name if target is not None else None
