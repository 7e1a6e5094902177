"""What beat sends for a due row, and how the row changes: pure, given the row and `now`.

The misfire arithmetic is erp.tasks.schedules.plan_runs; this adds what the row says (its
arguments, expiry, one-off flag, routing) and what a broken row turns into: disabled, with a
readable reason. Whatever one row raises is caught here, so one row cannot stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from erp.tasks import schedules
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.scheduler_models import BrokenScheduleError, PeriodicTaskDB

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """One scheduled run of a periodic task, about to be sent."""

    task: PeriodicTaskDB
    scheduled_at: datetime
    args: list[Any]
    kwargs: dict[str, Any]
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = periodic_run_id(self.task.id, self.scheduled_at)

    @property
    def queue(self) -> str | None:
        return self.task.queue


@dataclass
class RowUpdate:
    """The new state of a periodic_tasks row once its runs are out."""

    id: int
    next_run_at: datetime | None
    runs_sent: int
    enabled: bool
    disabled_reason: str | None


# Why a row's routing would deliver its messages nowhere (None when it is delivered).
RoutingCheck = Callable[[PeriodicTaskDB], "str | None"]


def disabled(task: PeriodicTaskDB, reason: str) -> RowUpdate:
    """The update of a row beat cannot use: disabled, with the reason, left as it was otherwise."""
    logger.error("beat: periodic task %r disabled: %s", task.name, reason, extra={"action": "row_disabled"})
    return RowUpdate(task.id, None, 0, False, reason)


def plan_row(
    task: PeriodicTaskDB,
    now: datetime,
    *,
    grace_seconds: float,
    max_catch_up: int,
    routing_problem: RoutingCheck | None = None,
) -> tuple[RowUpdate, list[Run]]:
    """What to send for a due row, and how the row changes once it is sent."""
    assert task.next_run_at is not None, "only due rows are planned"
    try:
        spec = task.get_schedule()
        schedules.validate(spec)
        args, kwargs = task.get_args(), task.get_kwargs()
        task.get_headers()
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
    runs = [Run(task, scheduled_at, args, kwargs) for scheduled_at in plan.send]
    if task.expires is not None and now >= task.expires:
        update = RowUpdate(task.id, None, len(runs), False, f"expired at {task.expires.isoformat()}")
    elif plan.next_run_at is None or (task.one_off and runs):
        update = RowUpdate(task.id, None, len(runs), False, "finished: ran its last scheduled run")
    else:
        update = RowUpdate(task.id, plan.next_run_at, len(runs), True, None)
    return update, runs
