"""Backfill: plan the occurrences of a past range, each with its own slot, due now.

The only write to the ledger from the API, with the statement shape beat uses (planned rows, ON
CONFLICT DO NOTHING on task and slot), so a slot the ledger already holds is never run a
second time; beat is NOTIFYed and sends the planned rows on its next tick.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.clock import utcnow
from erp.core.db import SCHEDULE_CHANGES_CHANNEL
from erp.core.errors import InvalidInputError
from erp.tasks.api.periodic_tasks import get_periodic_task
from erp.tasks.calendar import schedules
from erp.tasks.calendar.slots import range_slots
from erp.tasks.periodic_messages import periodic_run_id
from erp.tasks.scheduler_models import PeriodicTaskRunDB

logger = logging.getLogger(__name__)


# A backfill plans at most this many occurrences; a larger range is refused. Crontab and solar
# ranges are walked slot by slot (a solar slot costs about a millisecond), so no more than one
# past this limit: the walk is bounded whatever range is asked for.
MAX_BACKFILL = 1000
# Rows written per INSERT statement of a backfill.
BACKFILL_CHUNK = 500


class BackfillTooLarge(InvalidInputError):
    pass


@dataclass(frozen=True)
class BackfillResult:
    planned: int
    already_recorded: int
    first_slot: datetime | None
    last_slot: datetime | None
    # A dry run's answer: which slots of the range are new, and which the ledger already holds.
    new_slots: tuple[datetime, ...] = ()
    recorded_slots: tuple[datetime, ...] = ()


async def plan_backfill(
    periodic_task_id: int, start: datetime, end: datetime, *, session: AsyncSession, dry_run: bool = False
) -> BackfillResult:
    """Plan the occurrences of a past range, each with its own slot, due now.

    A slot the ledger already holds (ran, running, skipped or planned) is left alone. Beat is
    NOTIFYed, and publishes planned rows that are due on its next tick, at once. A dry run
    checks the same and writes nothing: it says which slots would be planned and which are held.
    """
    now = utcnow()
    if end > now:
        raise InvalidInputError(f"to: {end.isoformat()} is in the future; a backfill runs past occurrences only")
    task = await get_periodic_task(periodic_task_id, session=session)
    spec = task.get_schedule()
    try:
        # In a thread: walking a long range is CPU work that would hold up every other request.
        slots, total = await asyncio.to_thread(
            range_slots,
            spec,
            task.grid_anchor,
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
    if dry_run:
        held = set(
            await session.scalars(
                select(PeriodicTaskRunDB.scheduled_at).where(
                    PeriodicTaskRunDB.periodic_task_id == task.id, PeriodicTaskRunDB.scheduled_at.in_(slots)
                )
            )
        )
        fresh = tuple(slot for slot in slots if slot not in held)
        recorded = tuple(slot for slot in slots if slot in held)
        first, last = (slots[0], slots[-1]) if slots else (None, None)
        return BackfillResult(len(fresh), len(recorded), first, last, new_slots=fresh, recorded_slots=recorded)
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
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": SCHEDULE_CHANGES_CHANNEL})
    await session.commit()
    logger.info(
        "backfill of %r: %d planned, %d already recorded",
        task.name,
        planned,
        len(slots) - planned,
        extra={"action": "backfilled"},
    )
    return BackfillResult(planned, len(slots) - planned, slots[0] if slots else None, slots[-1] if slots else None)
