"""Why didn't it run at T? The ledger row of that slot, or the reasons there is none, replayed
from the change log and beat's alerts as they stood at T."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.clock import utcnow
from erp.core.config import get_settings
from erp.tasks.api.periodic_tasks import PeriodicTaskNotFound, get_periodic_task
from erp.tasks.calendar import schedules
from erp.tasks.calendar.kinds import SCHEDULE_COLUMNS
from erp.tasks.calendar.slots import nearest_slots_to
from erp.tasks.scheduler_models import PeriodicTaskAlertDB, PeriodicTaskChangeDB, PeriodicTaskDB, PeriodicTaskRunDB

# How far from `time` a recorded slot may be and still be "the run at `time`", by default.
DEFAULT_TOLERANCE_SECONDS = 60


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


async def explain_run_at(
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
    now = utcnow()
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
        nearest_slots = await asyncio.to_thread(nearest_slots_to, task.get_schedule(), task.grid_anchor, moment)
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
