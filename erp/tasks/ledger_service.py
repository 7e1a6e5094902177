"""Reading and feeding the run ledger from the admin API: runs, last outcomes, backfills, alerts,
and "why didn't it run at T?".

Plain async functions taking the session, like erp.tasks.service. Beat and the worker write the
ledger through their own modules (run_ledger, run_ledger_worker); here only a backfill writes,
with the same statement shape beat uses (planned rows, ON CONFLICT DO NOTHING), so a slot the
ledger already holds is never run a second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.config import get_settings
from erp.core.errors import InvalidInputError
from erp.tasks import schedules
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.schedule_kinds import SCHEDULE_COLUMNS, AlertKind, RunState, SkipReason
from erp.tasks.scheduler_models import (
    PeriodicTaskAlertDB,
    PeriodicTaskChangeDB,
    PeriodicTaskDB,
    PeriodicTaskRunDB,
)
from erp.tasks.service import PeriodicTaskNotFound, get_periodic_task

logger = logging.getLogger(__name__)

# A backfill plans at most this many occurrences; a larger range is refused. Crontab and solar
# ranges are walked slot by slot (a solar slot costs about a millisecond), so no more than one
# past this limit: the walk is bounded whatever range is asked for.
MAX_BACKFILL = 1000
# How far from `time` a recorded slot may be and still be "the run at `time`", by default.
DEFAULT_TOLERANCE_SECONDS = 60
# Rows written per INSERT statement of a backfill.
BACKFILL_CHUNK = 500


class BackfillTooLarge(InvalidInputError):
    pass


# --- reading runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilter:
    """What `GET /runs` asks for; every part optional."""

    periodic_task_id: int | None = None
    states: Sequence[RunState] = ()
    skip_reasons: Sequence[SkipReason] = ()
    start: datetime | None = None  # on scheduled_at, inclusive
    end: datetime | None = None  # on scheduled_at, exclusive
    late: bool = False
    late_after_seconds: int = 60
    failed: bool = False
    skipped: bool = False

    def conditions(self) -> list[ColumnElement[bool]]:
        run = PeriodicTaskRunDB
        conditions: list[ColumnElement[bool]] = []
        if self.periodic_task_id is not None:
            conditions.append(run.periodic_task_id == self.periodic_task_id)
        states = set(self.states)
        if self.failed:
            states.add("failed")
        if self.skipped:
            states.add("skipped")
        if states:
            conditions.append(run.state.in_(sorted(states)))
        if self.skip_reasons:
            conditions.append(run.skip_reason.in_(list(self.skip_reasons)))
        if self.start is not None:
            conditions.append(run.scheduled_at >= self.start)
        if self.end is not None:
            conditions.append(run.scheduled_at < self.end)
        if self.late:
            allowed = timedelta(seconds=self.late_after_seconds)
            conditions.append(
                or_(
                    run.started_at > run.due_at + allowed,
                    # Not started at all while its time is well past: late too.
                    and_(
                        run.started_at.is_(None), run.state.in_(("planned", "sent")), run.due_at + allowed < func.now()
                    ),
                    run.start_deadline_missed,
                    run.finish_deadline_missed,
                )
            )
        return conditions


async def list_runs(
    run_filter: RunFilter, *, session: AsyncSession, limit: int, offset: int
) -> tuple[list[PeriodicTaskRunDB], bool]:
    """Occurrences matching the filter, newest slot first; and whether there are more.

    No total count: on a ledger of millions of rows it would cost more than the page.
    """
    rows = list(
        await session.scalars(
            select(PeriodicTaskRunDB)
            .where(*run_filter.conditions())
            .order_by(PeriodicTaskRunDB.scheduled_at.desc(), PeriodicTaskRunDB.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return rows[:limit], len(rows) > limit


async def last_runs(periodic_task_ids: Sequence[int], *, session: AsyncSession) -> dict[int, PeriodicTaskRunDB]:
    """The latest occurrence of each task, in one query for a whole page.

    A LATERAL join reads one row per task down the (periodic_task_id, scheduled_at) index;
    DISTINCT ON would read every row of every task.
    """
    if not periodic_task_ids:
        return {}
    rows = await session.scalars(
        select(PeriodicTaskRunDB).from_statement(
            text(
                """
                SELECT latest.* FROM unnest(CAST(:ids AS bigint[])) AS page(id)
                CROSS JOIN LATERAL (
                    SELECT * FROM periodic_task_runs AS run WHERE run.periodic_task_id = page.id
                    ORDER BY run.scheduled_at DESC LIMIT 1
                ) AS latest
                """
            )
        ),
        {"ids": list(periodic_task_ids)},
    )
    return {row.periodic_task_id: row for row in rows}


async def run_by_message_id(message_id: str, *, session: AsyncSession) -> PeriodicTaskRunDB | None:
    row: PeriodicTaskRunDB | None = await session.scalar(
        select(PeriodicTaskRunDB).where(PeriodicTaskRunDB.message_id == message_id)
    )
    return row


# --- backfill -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillResult:
    planned: int
    already_recorded: int
    first_slot: datetime | None
    last_slot: datetime | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def interval_step(spec: schedules.IntervalSpec) -> timedelta:
    return timedelta(**{spec.period: spec.every})


def _interval_anchor(task: PeriodicTaskDB) -> datetime | None:
    """A slot of the interval's grid: backfilled slots line up with the ones beat recorded."""
    return task.next_run_at or task.last_run_at or task.start_time


def range_slots(
    spec: schedules.ScheduleSpec,
    anchor: datetime | None,
    bounds: tuple[datetime | None, datetime | None],
    start: datetime,
    end: datetime,
    limit: int,
) -> tuple[list[datetime], int]:
    """Up to `limit` slots of a schedule in [start, end] within its `bounds` (start_time,
    expires), and how many there are: exact for intervals (arithmetic) and clocked schedules;
    for crontab and solar ones, which are walked, at most `limit + 1`, meaning "more"."""
    schedules.validate(spec)
    start_time, expires = bounds
    if start_time is not None:
        start = max(start, start_time)
    if expires is not None:
        end = min(end, expires)
    if end < start:
        return [], 0
    if isinstance(spec, schedules.ClockedSpec):
        clocked = spec.clocked_time.astimezone(UTC)
        return ([clocked], 1) if start <= clocked <= end else ([], 0)
    if isinstance(spec, schedules.IntervalSpec):
        step = interval_step(spec)
        anchor = anchor or start
        first = anchor - ((anchor - start) // step) * step  # the first grid slot at or after start
        total = 0 if first > end else (end - first) // step + 1
        return [first + index * step for index in range(min(total, limit))], total
    slots: list[datetime] = []
    moment = schedules.next_run_after(spec, start - timedelta(microseconds=1))
    while moment is not None and moment <= end and len(slots) <= limit:
        slots.append(moment)
        moment = schedules.next_run_after(spec, moment)
    return slots[:limit], len(slots)


async def backfill(periodic_task_id: int, start: datetime, end: datetime, *, session: AsyncSession) -> BackfillResult:
    """Plan the occurrences of a past range, each with its own slot, due now.

    A slot the ledger already holds (ran, running, skipped or planned) is left alone. Beat is
    NOTIFYed, and publishes planned rows that are due on its next tick, at once.
    """
    now = _utcnow()
    if end > now:
        raise InvalidInputError(f"to: {end.isoformat()} is in the future; a backfill runs past occurrences only")
    task = await get_periodic_task(periodic_task_id, session=session)
    spec = task.get_schedule()
    try:
        # In a thread: walking a long range is CPU work that would hold up every other request.
        slots, total = await asyncio.to_thread(
            range_slots,
            spec,
            _interval_anchor(task),
            (task.start_time, task.expires),
            start,
            end,
            MAX_BACKFILL,
        )
    except schedules.ScheduleError as error:
        raise InvalidInputError(f"schedule: {error}") from None
    except OverflowError:
        raise InvalidInputError("schedule: its slots in this range cannot be computed") from None
    if total > MAX_BACKFILL:
        count = str(total) if isinstance(spec, schedules.IntervalSpec) else f"more than {MAX_BACKFILL}"
        raise BackfillTooLarge(
            f"the range holds {count} occurrences of {task.name!r}; a backfill runs at most {MAX_BACKFILL}:"
            " split it into smaller ranges"
        )
    planned = 0
    for index in range(0, len(slots), BACKFILL_CHUNK):
        chunk = slots[index : index + BACKFILL_CHUNK]
        result = await session.execute(
            insert(PeriodicTaskRunDB)
            .values(
                [
                    {
                        "periodic_task_id": task.id,
                        "periodic_task_name": task.name,
                        "task_name": task.task,
                        "origin": "backfill",
                        "scheduled_at": slot,
                        "due_at": now,
                        "message_id": periodic_run_id(task.id, slot),
                        "state": "planned",
                    }
                    for slot in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["periodic_task_id", "scheduled_at"])
            .returning(PeriodicTaskRunDB.id)
        )
        planned += len(result.all())
    if planned:
        await session.execute(text("SELECT pg_notify('erp_periodic_tasks', '')"))
    await session.commit()
    logger.info(
        "backfill of %r: %d planned, %d already recorded",
        task.name,
        planned,
        len(slots) - planned,
        extra={"action": "backfilled"},
    )
    return BackfillResult(planned, len(slots) - planned, slots[0] if slots else None, slots[-1] if slots else None)


# --- "why didn't it run at T?" -----------------------------------------------------------------


@dataclass
class RunAtAnswer:
    time: datetime
    run: PeriodicTaskRunDB | None = None
    reasons: list[str] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    nearest_slots: list[datetime] = field(default_factory=list)

    def say(self, reason: str, sentence: str) -> None:
        self.reasons.append(reason)
        self.explanation.append(sentence)


def previous_slot(spec: schedules.ScheduleSpec, anchor: datetime | None, moment: datetime) -> datetime | None:
    """The last slot strictly before `moment` (None when there is none within a few years)."""
    if isinstance(spec, schedules.ClockedSpec):
        clocked = spec.clocked_time.astimezone(UTC)
        return clocked if clocked < moment else None
    if isinstance(spec, schedules.IntervalSpec):
        step = interval_step(spec)
        base = anchor or moment
        before = base - ((base - moment) // step) * step  # first grid slot at or after moment
        return before - step
    # Crontab and solar only go forwards: walk from a point before `moment`, further back if needed.
    window = timedelta(hours=2)
    for _ in range(6):  # 2 h, 16 h, 5 days, 43 days, 341 days, 7.5 years
        candidate = schedules.next_run_after(spec, moment - window)
        found: datetime | None = None
        while candidate is not None and candidate < moment:
            found = candidate
            candidate = schedules.next_run_after(spec, candidate)
        if found is not None:
            return found
        window *= 8
    return None


def nearest_slots_to(spec: schedules.ScheduleSpec, anchor: datetime | None, moment: datetime) -> list[datetime] | None:
    """None when `moment` is a slot of the schedule; otherwise the slots just before and after it
    (those that exist). Walks up to a few thousand slots of a crontab or solar schedule."""
    following = next_slot(spec, anchor, moment)
    if following == moment:
        return None
    before = previous_slot(spec, anchor, moment)
    return [slot for slot in (before, following) if slot is not None]


def next_slot(spec: schedules.ScheduleSpec, anchor: datetime | None, moment: datetime) -> datetime | None:
    """The first slot at or after `moment`."""
    if isinstance(spec, schedules.IntervalSpec) and anchor is not None:
        step = interval_step(spec)
        return anchor - ((anchor - moment) // step) * step
    return schedules.next_run_after(spec, moment - timedelta(microseconds=1))


def _state_at(
    changes: Sequence[PeriodicTaskChangeDB], stops: Sequence[PeriodicTaskAlertDB], moment: datetime
) -> dict[str, Any]:
    """The task's enabled and paused flags at `moment`, replayed from its change log and from
    beat's stopped_firing alerts (beat disables a broken row without a change record)."""
    state: dict[str, Any] = {"enabled": True, "paused": False, "paused_by": None, "pause_note": None, "stop": None}
    events: list[tuple[datetime, int, PeriodicTaskChangeDB | PeriodicTaskAlertDB]] = [
        *((change.changed_at, 0, change) for change in changes),
        *((stop.created_at, 1, stop) for stop in stops),
    ]
    for when, _, event in sorted(events, key=lambda item: (item[0], item[1])):
        if when > moment:
            break
        if isinstance(event, PeriodicTaskAlertDB):
            state.update(enabled=False, stop=event)
            continue
        values = event.changes or {}
        if event.action == "create":
            state["enabled"] = values.get("enabled", True)
        elif "enabled" in values:
            state.update(enabled=values["enabled"][1], stop=None)
        if event.action == "pause":
            note = (values.get("pause_note") or [None, None])[1]
            state.update(paused=True, paused_by=event.actor_email, pause_note=note)
        elif event.action == "resume":
            state.update(paused=False, paused_by=None, pause_note=None)
    return state


async def run_at(
    periodic_task_id: int, moment: datetime, tolerance_seconds: int, *, session: AsyncSession
) -> RunAtAnswer:
    """The ledger row of the slot at `moment` (or the nearest within the tolerance), or why none."""
    answer = RunAtAnswer(time=moment)
    tolerance = timedelta(seconds=tolerance_seconds)
    distance = func.abs(func.extract("epoch", PeriodicTaskRunDB.scheduled_at - moment))
    answer.run = await session.scalar(
        select(PeriodicTaskRunDB)
        .where(
            PeriodicTaskRunDB.periodic_task_id == periodic_task_id,
            PeriodicTaskRunDB.scheduled_at.between(moment - tolerance, moment + tolerance),
        )
        .order_by(distance, PeriodicTaskRunDB.id)
        .limit(1)
    )
    changes = list(
        await session.scalars(
            select(PeriodicTaskChangeDB)
            .where(PeriodicTaskChangeDB.periodic_task_id == periodic_task_id)
            .order_by(PeriodicTaskChangeDB.changed_at, PeriodicTaskChangeDB.id)
        )
    )
    try:
        task: PeriodicTaskDB | None = await get_periodic_task(periodic_task_id, session=session)
    except PeriodicTaskNotFound:
        task = None
        if answer.run is None and not changes:
            raise
    if answer.run is not None:
        run = answer.run
        answer.say("recorded", f"the ledger has the occurrence of {run.scheduled_at.isoformat()}: {_describe(run)}")
        return answer
    await _explain_missing(answer, task, changes, session=session)
    return answer


def _describe(run: PeriodicTaskRunDB) -> str:
    if run.state == "skipped":
        return f"skipped ({run.skip_reason})"
    if run.state == "failed":
        return f"failed ({run.error_type}: {run.error_message})"
    return str(run.state)


async def _explain_missing(
    answer: RunAtAnswer,
    task: PeriodicTaskDB | None,
    changes: Sequence[PeriodicTaskChangeDB],
    *,
    session: AsyncSession,
) -> None:
    moment = answer.time
    now = _utcnow()
    deleted = next((change for change in changes if change.action == "delete"), None)
    if task is None:
        when = deleted.changed_at.isoformat() if deleted else "an unknown time"
        answer.say("deleted", f"the periodic task was deleted at {when}")
        if deleted is not None and deleted.changed_at <= moment:
            return
    created = changes[0].changed_at if changes and changes[0].action == "create" else None
    created = created or (task.created_at if task is not None else None)
    if created is not None and created > moment:
        answer.say("created_after", f"the periodic task was created at {created.isoformat()}, after this time")
        return
    if moment > now:
        answer.say("in_future", "this time has not come yet")
    retention = timedelta(days=get_settings().RUN_LEDGER_RETENTION_DAYS)
    if moment < now - retention:
        answer.say(
            "pruned",
            f"the ledger keeps occurrences for {retention.days} days (RUN_LEDGER_RETENTION_DAYS); older ones are pruned",
        )
    periodic_task_id = task.id if task is not None else changes[0].periodic_task_id
    stops = list(
        await session.scalars(
            select(PeriodicTaskAlertDB)
            .where(
                PeriodicTaskAlertDB.periodic_task_id == periodic_task_id,
                PeriodicTaskAlertDB.kind == "stopped_firing",
                PeriodicTaskAlertDB.created_at <= moment,
            )
            .order_by(PeriodicTaskAlertDB.created_at)
        )
    )
    state = _state_at(changes, stops, moment)
    if state["stop"] is not None:
        stop = state["stop"]
        answer.say("disabled", f"beat had stopped the task at {stop.created_at.isoformat()}: {stop.message}")
    elif not state["enabled"]:
        answer.say("disabled", "the periodic task was disabled at this time (its change log says so)")
    if state["paused"]:
        # An auto-pause records no note in the change log (the alert and the task carry it).
        note = f": {state['pause_note']}" if state["pause_note"] else ""
        answer.say("paused", f"the periodic task was paused at this time by {state['paused_by']}{note}")
    if task is None:
        return
    if task.start_time is not None and moment < task.start_time:
        answer.say("before_start_time", f"its start_time is {task.start_time.isoformat()}, after this time")
    if task.expires is not None and moment > task.expires:
        answer.say("expired", f"it expired at {task.expires.isoformat()}")
    schedule_changed = next(
        (
            change
            for change in changes
            if change.changed_at > moment
            and change.action == "update"
            and set(change.changes or {}) & set(SCHEDULE_COLUMNS)
        ),
        None,
    )
    if schedule_changed is not None:
        answer.say(
            "schedule_changed",
            f"its schedule was changed at {schedule_changed.changed_at.isoformat()}; the slots below are those of"
            " the current schedule",
        )
    try:
        # In a thread: walking a crontab or solar schedule is CPU work (see nearest_slots).
        nearest_slots = await asyncio.to_thread(nearest_slots_to, task.get_schedule(), _interval_anchor(task), moment)
        if nearest_slots is not None:
            answer.nearest_slots = nearest_slots
            nearest = ", ".join(slot.isoformat() for slot in nearest_slots) or "none nearby"
            answer.say("not_a_slot", f"this time is not a slot of its schedule; the nearest slots: {nearest}")
    except (schedules.ScheduleError, OverflowError, ValueError) as error:
        answer.say("not_a_slot", f"its schedule cannot be computed ({error})")
    if not answer.reasons:
        answer.say(
            "not_recorded",
            "it was a slot and the task was enabled, yet the ledger has no occurrence: no beat was running then,"
            " or the slot was beyond the misfire catch-up (CELERY_BEAT_MAX_CATCH_UP_RUNS) when beat came back",
        )


# --- alerts -------------------------------------------------------------------------------------


async def list_alerts(
    *,
    session: AsyncSession,
    delivered: bool | None,
    kind: AlertKind | None,
    periodic_task_id: int | None,
    limit: int,
    offset: int,
) -> tuple[list[PeriodicTaskAlertDB], bool]:
    query = select(PeriodicTaskAlertDB)
    if delivered is not None:
        query = query.where(
            PeriodicTaskAlertDB.delivered_at.is_not(None) if delivered else PeriodicTaskAlertDB.delivered_at.is_(None)
        )
    if kind is not None:
        query = query.where(PeriodicTaskAlertDB.kind == kind)
    if periodic_task_id is not None:
        query = query.where(PeriodicTaskAlertDB.periodic_task_id == periodic_task_id)
    rows = list(
        await session.scalars(
            query.order_by(PeriodicTaskAlertDB.created_at.desc(), PeriodicTaskAlertDB.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return rows[:limit], len(rows) > limit
