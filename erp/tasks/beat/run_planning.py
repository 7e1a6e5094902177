"""What beat records for a due row, and how the row changes: pure, given the row and `now`.

The misfire arithmetic is erp.tasks.calendar.schedules.plan_runs; this adds what the row says (its
arguments, expiry, one-off flag, routing, pause, overlap and jitter policies) and turns it into
occurrences for the run ledger: `planned` (to be sent once due), `held` (buffer_one: waits for
the previous occurrence), or `skipped` with the reason. A broken row becomes disabled, with a
readable reason. Whatever one row raises is caught here, so one row cannot stop the others.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from erp.tasks.calendar import schedules
from erp.tasks.ledger_kinds import RunOrigin, RunState, SkipReason
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.scheduler_models import BrokenScheduleError, PeriodicTaskDB

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a periodic task, as the run ledger records it."""

    periodic_task_id: int
    periodic_task_name: str
    task_name: str
    scheduled_at: datetime
    due_at: datetime
    state: RunState
    skip_reason: SkipReason | None = None
    origin: RunOrigin = "schedule"

    @functools.cached_property
    def message_id(self) -> str:
        # Cached: the ledger's row and the message both need it, and it is a uuid5 of a formatted time.
        return periodic_run_id(self.periodic_task_id, self.scheduled_at)


@dataclass
class RowUpdate:
    """The new state of a periodic_tasks row once its occurrences are recorded."""

    id: int
    next_run_at: datetime | None
    runs_sent: int
    enabled: bool
    disabled_reason: str | None


# Why a row's routing would deliver its messages nowhere (None when it is delivered).
RoutingCheck = Callable[[PeriodicTaskDB], "str | None"]


def disabled(task: PeriodicTaskDB, reason: str) -> RowUpdate:
    """The update of a row beat cannot use: disabled, with the reason."""
    logger.error("beat: periodic task %r disabled: %s", task.name, reason, extra={"action": "row_disabled"})
    return RowUpdate(task.id, None, 0, False, reason)


def plan_row(
    task: PeriodicTaskDB,
    now: datetime,
    *,
    grace_seconds: float,
    max_catch_up: int,
    routing_problem: RoutingCheck | None = None,
    has_unfinished: bool = False,
    has_held: bool = False,
) -> tuple[RowUpdate, list[Occurrence]]:
    """What to record for a due row, and how the row changes.

    `has_unfinished` / `has_held`: the ledger holds an occurrence of this task that has not
    finished / that is held (read by the caller for rows whose overlap policy needs it).
    """
    assert task.next_run_at is not None, "only due rows are planned"
    try:
        spec = task.get_schedule()
        schedules.validate(spec)
        task.get_args(), task.get_kwargs(), task.get_headers()
        problem = routing_problem(task) if routing_problem is not None else None
        if problem is not None:
            raise BrokenScheduleError(f"its messages would reach no queue: {problem}")
        if task.one_off:
            # A one-off runs exactly once, at its scheduled time, whatever the misfire policy.
            expired = task.expires is not None and now > task.expires
            plan = schedules.RunPlan(() if expired else (task.next_run_at,), None)
        else:
            plan = schedules.plan_runs(
                spec,
                next_run_at=task.next_run_at,
                now=now,
                misfire_policy=task.misfire_policy,
                grace_seconds=grace_seconds,
                max_catch_up=max_catch_up,
                expires=task.expires,
            )
    except (BrokenScheduleError, schedules.ScheduleError) as error:
        return disabled(task, f"broken: {error}"), []
    except Exception as error:  # anything else one row raises must not stop the other rows
        logger.exception("beat: periodic task %r could not be planned", task.name, extra={"action": "row_failed"})
        return disabled(task, f"broken: {type(error).__name__}: {error}"), []

    occurrences = [_occurrence(task, moment, "skipped", "misfire") for moment in plan.missed]
    busy, held = has_unfinished, has_held
    for moment in plan.send:
        if task.paused_at is not None:
            occurrences.append(_occurrence(task, moment, "skipped", "paused"))
        elif busy and task.overlap_policy == "skip":
            occurrences.append(_occurrence(task, moment, "skipped", "overlap"))
        elif busy and task.overlap_policy == "buffer_one":
            occurrences.append(
                _occurrence(task, moment, "skipped", "overlap") if held else _occurrence(task, moment, "held")
            )
            held = True
        else:
            occurrences.append(_occurrence(task, moment, "planned"))
            busy = True
    expired_now = task.expires is not None and now >= task.expires
    if expired_now and not plan.send:
        occurrences.append(_occurrence(task, task.next_run_at, "skipped", "expired"))
    runs = sum(1 for occurrence in occurrences if occurrence.state in ("planned", "held"))
    if expired_now:
        update = RowUpdate(task.id, None, runs, False, f"expired at {task.expires.isoformat()}")  # type: ignore[union-attr]
    elif plan.next_run_at is None or task.one_off:
        update = RowUpdate(task.id, None, runs, False, "finished: ran its last scheduled run")
    else:
        update = RowUpdate(task.id, plan.next_run_at, runs, True, None)
    return update, occurrences


def _occurrence(
    task: PeriodicTaskDB, scheduled_at: datetime, state: RunState, reason: SkipReason | None = None
) -> Occurrence:
    return Occurrence(
        periodic_task_id=task.id,
        periodic_task_name=task.name,
        task_name=task.task,
        scheduled_at=scheduled_at,
        due_at=scheduled_at + schedules.jitter_offset(task.id, scheduled_at, task.jitter_seconds or 0),
        state=state,
        skip_reason=reason,
    )
