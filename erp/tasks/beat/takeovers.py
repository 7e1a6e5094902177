"""Rows and occurrences another beat held, and saying so when they come to this beat.

Two beats share the tables through `FOR UPDATE SKIP LOCKED`: whatever is still due after a
whole tick is locked by the other beat. A healthy beat releases it within milliseconds; what
is held a tick later and then free was held by a beat that froze or lost its host (until
PostgreSQL ended its session), or whose transaction an error rolled back. The log line says
which, from the other beats' heartbeats.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from erp.tasks.beat import run_ledger
from erp.tasks.scheduler_models import BeatHeartbeatDB, PeriodicTaskDB

logger = logging.getLogger(__name__)


class Takeovers:
    """What one beat saw held elsewhere at the end of its last tick."""

    def __init__(self, instance: str, *, stall_timeout_seconds: float, batch_size: int, publish_batch: int) -> None:
        self.instance = instance
        self.stall_timeout_seconds = stall_timeout_seconds
        self.batch_size = batch_size
        self.publish_batch = publish_batch
        # Due rows as (id, next_run_at), and planned occurrences by id.
        self.rows: set[tuple[int, datetime]] = set()
        self.runs: set[int] = set()

    @property
    def any_held(self) -> bool:
        return bool(self.rows or self.runs)

    def note_held(self, engine: Engine, now: datetime) -> None:
        """Remember the rows and the planned occurrences still due after this tick: another
        beat holds them locked (planning the rows, or publishing the occurrences)."""
        with engine.connect() as connection:
            held = connection.execute(
                select(PeriodicTaskDB.id, PeriodicTaskDB.next_run_at)
                .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at <= now)
                .limit(self.batch_size)
            ).all()
            self.runs = set(run_ledger.planned_run_ids_due(connection, now, self.publish_batch))
        self.rows = {(row.id, row.next_run_at) for row in held}

    def forget(self) -> None:
        """After a fault this beat shared: rows seen locked before it may have been released
        by the fault itself (another beat's transaction failed with it), not by a beat that froze."""
        self.rows.clear()
        self.runs.clear()

    def note_rows(self, session: Session, tasks: Sequence[PeriodicTaskDB], now: datetime) -> None:
        """Say so when rows another beat held, at the same due time, come to this beat.

        A beat that merely planned them meanwhile has moved their next run on; one that froze
        or lost its host left them as they were until PostgreSQL ended its session.
        """
        if not self.rows:
            return
        taken = [task for task in tasks if (task.id, task.next_run_at) in self.rows]
        if taken:
            overdue = max((now - task.next_run_at).total_seconds() for task in taken if task.next_run_at)
            logger.warning(
                "beat: took over %d row(s) another beat held, overdue by up to %.1f s; %s",
                len(taken),
                overdue,
                self._why(session.connection(), now),
                extra={"action": "rows_taken_over"},
            )

    def note_runs(self, session: Session, due: Sequence[run_ledger.DueRun], now: datetime) -> None:
        """Say so when occurrences another beat held while publishing come to this beat."""
        if not self.runs:
            return
        taken = [run for run in due if run.run_id in self.runs]
        if taken:
            logger.warning(
                "beat: took over %d occurrence(s) another beat held while publishing; %s",
                len(taken),
                self._why(session.connection(), now),
                extra={"action": "runs_taken_over"},
            )

    def _why(self, connection: Connection, now: datetime) -> str:
        return why_locks_were_released(connection, self.instance, now, self.stall_timeout_seconds)


def why_locks_were_released(connection: Connection, instance: str, now: datetime, stall_timeout_seconds: float) -> str:
    """What the other beats' heartbeats say about why rows they held came free (for a log line).

    The beat asking ticked throughout (a failed tick forgets what it saw held), so the fault
    was not one it shared: either a beat stopped answering and PostgreSQL ended its session,
    or only that beat's transaction failed. Asked on the connection of the transaction that
    took the rows over: beat's pool has no connection to spare.
    """
    others = connection.execute(
        select(BeatHeartbeatDB.instance, BeatHeartbeatDB.last_tick_at).where(BeatHeartbeatDB.instance != instance)
    ).all()
    ages = {row.instance: (now - row.last_tick_at).total_seconds() for row in others}
    silent = {other: age for other, age in ages.items() if age > stall_timeout_seconds}
    if silent:
        other, age = max(silent.items(), key=lambda item: item[1])
        return f"beat {other} last ticked {age:.0f} s ago: it stopped answering and its session was ended"
    if ages:
        return (
            f"every other beat ticked within the last {max(ages.values()):.0f} s: its transaction failed"
            " (an error rolled it back), no beat froze"
        )
    return "no other beat has a heartbeat"
