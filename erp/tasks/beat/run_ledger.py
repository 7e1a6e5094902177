"""The run ledger as beat uses it: record occurrences, publish the due ones, watch deadlines.

Every function takes the session (or connection) it works in: beat decides the transactions.
The statements work on batches (one round trip for a batch of rows), because beat's burst rate
is bounded by the round trips it makes per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session, noload

from erp.tasks.beat.run_planning import Occurrence, RowUpdate
from erp.tasks.ledger_kinds import FINISHED_STATES, UNFINISHED_STATES
from erp.tasks.scheduler_models import PeriodicTaskAlertDB, PeriodicTaskDB, PeriodicTaskRunDB

_RECORD = text(
    """
    INSERT INTO periodic_task_runs
        (periodic_task_id, periodic_task_name, task_name, origin, scheduled_at, due_at, message_id, state, skip_reason,
         planned_at)
    SELECT *, CAST(:planned_at AS timestamptz) FROM unnest(
        CAST(:task_ids AS bigint[]), CAST(:names AS text[]), CAST(:task_names AS text[]), CAST(:origins AS text[]),
        CAST(:scheduled AS timestamptz[]), CAST(:due AS timestamptz[]), CAST(:message_ids AS text[]),
        CAST(:states AS text[]), CAST(:reasons AS text[])
    )
    ON CONFLICT (periodic_task_id, scheduled_at) DO NOTHING
    RETURNING id, periodic_task_id, scheduled_at
    """
)


def record_occurrences(
    session: Session, occurrences: Sequence[Occurrence], planned_at: datetime
) -> dict[tuple[int, datetime], int]:
    """Insert the occurrences; one already in the ledger (same task and slot) is left as it is.
    Returns the ids of those inserted, by (periodic task id, scheduled time): the ones this
    call recorded, which its caller may publish at once (`mark_sending`).

    `planned_at` is the moment beat planned them for (its tick's `now`, the moment the misfire
    grace and the overlap policy were judged at), not when the insert ran.

    One statement with arrays for the whole batch: its SQL is the same for any batch (prepared
    once), where a multi-row VALUES would be compiled anew for each size, costing more than the
    insert itself.
    """
    if not occurrences:
        return {}
    inserted = session.execute(
        _RECORD,
        {
            "task_ids": [occurrence.periodic_task_id for occurrence in occurrences],
            "names": [occurrence.periodic_task_name for occurrence in occurrences],
            "task_names": [occurrence.task_name for occurrence in occurrences],
            "origins": [occurrence.origin for occurrence in occurrences],
            "scheduled": [occurrence.scheduled_at for occurrence in occurrences],
            "due": [occurrence.due_at for occurrence in occurrences],
            "message_ids": [occurrence.message_id for occurrence in occurrences],
            "states": [occurrence.state for occurrence in occurrences],
            "reasons": [occurrence.skip_reason for occurrence in occurrences],
            "planned_at": planned_at,
        },
    ).all()
    return {(row.periodic_task_id, row.scheduled_at): row.id for row in inserted}


def busy_tasks(session: Session, periodic_task_ids: Sequence[int]) -> tuple[set[int], set[int]]:
    """Of these tasks: those with an occurrence not finished yet, and those with a held one."""
    if not periodic_task_ids:
        return set(), set()
    rows = session.execute(
        select(PeriodicTaskRunDB.periodic_task_id, PeriodicTaskRunDB.state)
        .where(
            PeriodicTaskRunDB.periodic_task_id.in_(periodic_task_ids),
            PeriodicTaskRunDB.state.in_(UNFINISHED_STATES),
        )
        .distinct()
    ).all()
    return {row.periodic_task_id for row in rows}, {row.periodic_task_id for row in rows if row.state == "held"}


@dataclass(frozen=True)
class DueRun:
    """A planned occurrence whose time has come, with what its message needs from its task."""

    run_id: int
    message_id: str
    scheduled_at: datetime
    task: PeriodicTaskDB | None  # None: the periodic task was deleted after it was planned


def claim_due_runs(session: Session, now: datetime, limit: int) -> list[DueRun]:
    """Lock up to `limit` planned occurrences that are due (skipping those another beat holds)."""
    runs = session.execute(
        select(
            PeriodicTaskRunDB.id,
            PeriodicTaskRunDB.message_id,
            PeriodicTaskRunDB.scheduled_at,
            PeriodicTaskRunDB.periodic_task_id,
        )
        .where(PeriodicTaskRunDB.state == "planned", PeriodicTaskRunDB.due_at <= now)
        .order_by(PeriodicTaskRunDB.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    task_ids = {run.periodic_task_id for run in runs}
    # A message needs the task's own columns, not its schedule: no joined loads here.
    query = select(PeriodicTaskDB).where(PeriodicTaskDB.id.in_(task_ids)).options(noload("*"))
    tasks = {task.id: task for task in session.scalars(query)} if task_ids else {}
    return [DueRun(run.id, run.message_id, run.scheduled_at, tasks.get(run.periodic_task_id)) for run in runs]


def mark_sent(session: Session, run_ids: Sequence[int], now: datetime) -> None:
    if run_ids:
        session.execute(
            text(
                "UPDATE periodic_task_runs SET state = 'sent', sent_at = :now, publish_count = publish_count + 1"
                " WHERE id = ANY(:ids) AND state = 'planned'"
            ),
            {"now": now, "ids": list(run_ids)},
        )


_MARK_SENDING = text(
    """
    UPDATE periodic_task_runs SET state = 'sent', sent_at = :now, publish_count = publish_count + 1
    WHERE id IN (
        SELECT id FROM periodic_task_runs WHERE id = ANY(:ids) AND state = 'planned' FOR UPDATE SKIP LOCKED
    )
    RETURNING id
    """
)


def mark_sending(session: Session, run_ids: Sequence[int], now: datetime) -> set[int]:
    """Of these occurrences, lock those still planned and not held by another beat, mark them
    sent, and return their ids: claim and mark in one round trip, for occurrences whose message
    the caller has built already (those it has just planned).

    Marked before they are published, in the transaction that publishes them: Redis failing
    rolls the mark back, and a beat dying after publishing, before its commit, leaves them
    planned, sent again by the next tick (the worker drops the duplicate), as with
    `claim_due_runs` and `mark_sent`.
    """
    if not run_ids:
        return set()
    return set(session.execute(_MARK_SENDING, {"now": now, "ids": list(run_ids)}).scalars())


def mark_revoked(session: Session, run_ids: Sequence[int], now: datetime) -> None:
    """Planned occurrences that cannot be sent any more (their task was deleted)."""
    if run_ids:
        session.execute(
            text("UPDATE periodic_task_runs SET state = 'revoked', finished_at = :now WHERE id = ANY(:ids)"),
            {"now": now, "ids": list(run_ids)},
        )


def release_held(session: Session, now: datetime) -> int:
    """Held occurrences (buffer_one) whose earlier occurrences have all finished become planned."""
    result = session.execute(
        text(
            f"""
            UPDATE periodic_task_runs AS held SET state = 'planned', due_at = GREATEST(held.due_at, :now)
            WHERE held.state = 'held' AND NOT EXISTS (
                SELECT 1 FROM periodic_task_runs AS earlier
                WHERE earlier.periodic_task_id = held.periodic_task_id
                  AND earlier.scheduled_at < held.scheduled_at
                  AND earlier.state IN {tuple(state for state in UNFINISHED_STATES if state != "held")}
            )
            """
        ),
        {"now": now},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def planned_run_ids_due(connection: Connection, now: datetime, limit: int) -> list[int]:
    """Up to `limit` planned occurrences due at `now` (after a tick: those another beat holds)."""
    return list(
        connection.execute(
            select(PeriodicTaskRunDB.id)
            .where(PeriodicTaskRunDB.state == "planned", PeriodicTaskRunDB.due_at <= now)
            .limit(limit)
        ).scalars()
    )


def next_due_after(connection: Connection, now: datetime) -> datetime | None:
    """When the earliest planned occurrence after `now` falls due (jitter can put it after its
    slot); those due already are another beat's (see erp.tasks.beat.takeovers)."""
    value: datetime | None = connection.execute(
        select(func.min(PeriodicTaskRunDB.due_at)).where(
            PeriodicTaskRunDB.state == "planned", PeriodicTaskRunDB.due_at > now
        )
    ).scalar()
    return value


@dataclass(frozen=True)
class MissedDeadline:
    run_id: int
    periodic_task_id: int
    periodic_task_name: str
    scheduled_at: datetime
    kind: str  # start_deadline_missed or finish_deadline_missed
    seconds: int


def flag_missed_deadlines(session: Session, now: datetime) -> list[MissedDeadline]:
    """Mark occurrences that did not start (or finish) within their task's deadline; once each."""
    missed: list[MissedDeadline] = []
    for column, limit, states in (
        ("start_deadline_missed", "start_deadline_seconds", ("planned", "sent", "held")),
        ("finish_deadline_missed", "finish_deadline_seconds", UNFINISHED_STATES),
    ):
        rows = session.execute(
            text(
                f"""
                UPDATE periodic_task_runs AS r SET {column} = true
                FROM periodic_tasks AS t
                WHERE t.id = r.periodic_task_id AND t.{limit} IS NOT NULL
                  AND r.state IN {tuple(states)} AND NOT r.{column}
                  AND r.scheduled_at + t.{limit} * interval '1 second' < :now
                RETURNING r.id, r.periodic_task_id, r.periodic_task_name, r.scheduled_at, t.{limit}
                """
            ),
            {"now": now},
        ).all()
        missed += [MissedDeadline(row[0], row[1], row[2], row[3], column, row[4]) for row in rows]
    return missed


def alert_missed_deadlines(session: Session, now: datetime) -> None:
    """Flag the occurrences that missed a deadline (once each), with an alert for each."""
    for missed in flag_missed_deadlines(session, now):
        what = "did not start" if missed.kind == "start_deadline_missed" else "did not finish"
        add_alert(
            session,
            missed.kind,
            f"{missed.periodic_task_name}: the run of {missed.scheduled_at.isoformat()} {what}"
            f" within {missed.seconds} s",
            periodic_task_id=missed.periodic_task_id,
            periodic_task_name=missed.periodic_task_name,
            run_id=missed.run_id,
        )


def add_alert(
    session: Session,
    kind: str,
    message: str,
    *,
    periodic_task_id: int | None = None,
    periodic_task_name: str | None = None,
    run_id: int | None = None,
) -> None:
    session.add(
        PeriodicTaskAlertDB(
            kind=kind,
            message=message,
            periodic_task_id=periodic_task_id,
            periodic_task_name=periodic_task_name,
            run_id=run_id,
        )
    )


def prune(session: Session, now: datetime, keep: timedelta, limit: int) -> int:
    """Delete up to `limit` finished occurrences (and alerts) older than `keep`."""
    removed = session.execute(
        text(
            f"""
            DELETE FROM periodic_task_runs WHERE id IN (
                SELECT id FROM periodic_task_runs
                WHERE scheduled_at < :before AND state IN {FINISHED_STATES}
                LIMIT :limit
            )
            """
        ),
        {"before": now - keep, "limit": limit},
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        text(
            # Delivered or given up: an alert older than the retention is history either way.
            "DELETE FROM periodic_task_alerts WHERE id IN (SELECT id FROM periodic_task_alerts"
            " WHERE created_at < :before LIMIT :limit)"
        ),
        {"before": now - keep, "limit": limit},
    )
    return int(removed)


def claim_due_rows(session: Session, now: datetime, limit: int) -> list[PeriodicTaskDB]:
    """Lock up to `limit` due periodic_tasks rows, earliest first (skipping those another beat
    holds), and read them with their schedules.

    Locked first, alone and in the order of the due-time index (bitmap scans off for that one
    statement), then read: right after a herd fell due, before PostgreSQL has analysed the table
    again, the planner reckons with a few dozen due rows and, locking and joining in one
    statement, joined and sorted every due row for each batch (240 ms a batch of 500 with 50,000
    due, the sort on disk; the lock alone in the index's order: 2 ms). Read by a statement of its
    own, after the locks are held, each row is its latest version, as it stays until commit.
    """
    session.execute(text("SET LOCAL enable_bitmapscan = off"))
    ids = list(
        session.scalars(
            select(PeriodicTaskDB.id)
            .where(PeriodicTaskDB.enabled, PeriodicTaskDB.next_run_at <= now)
            .order_by(PeriodicTaskDB.next_run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    session.execute(text("SET LOCAL enable_bitmapscan TO DEFAULT"))
    if not ids:
        return []
    return list(
        session.scalars(
            select(PeriodicTaskDB).where(PeriodicTaskDB.id.in_(ids)).order_by(PeriodicTaskDB.next_run_at)
        ).unique()
    )


def advance_rows(session: Session, now: datetime, updates: Sequence[RowUpdate]) -> None:
    """Advance the planned rows (next run, last run, run count, enabled and its reason)."""
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
