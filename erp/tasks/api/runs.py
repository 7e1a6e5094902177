"""Reading the run ledger from the API: occurrences matching a filter, across schedules or of
one, newest first; and the occurrence a message id belongs to (a periodic run's task status)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from erp.tasks.ledger_kinds import RunState, SkipReason
from erp.tasks.scheduler_models import PeriodicTaskRunDB


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
    run_filter: RunFilter,
    *,
    session: AsyncSession,
    limit: int,
    offset: int,
    before: tuple[datetime, int] | None = None,
) -> tuple[list[PeriodicTaskRunDB], bool]:
    """Occurrences matching the filter, newest slot first; and whether there are more.

    No total count: on a ledger of millions of rows it would cost more than the page.
    `before` (the slot and id of the last row of the previous page) pages by key, as the
    console does: the next page starts down the index where the last one ended.
    """
    keyset: list[ColumnElement[bool]] = []
    if before is not None:
        keyset.append(
            tuple_(PeriodicTaskRunDB.scheduled_at, PeriodicTaskRunDB.id)
            < tuple_(literal(before[0]), literal(before[1]))
        )
    rows = list(
        await session.scalars(
            select(PeriodicTaskRunDB)
            .where(*run_filter.conditions(), *keyset)
            .order_by(PeriodicTaskRunDB.scheduled_at.desc(), PeriodicTaskRunDB.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return rows[:limit], len(rows) > limit


async def run_by_message_id(message_id: str, *, session: AsyncSession) -> PeriodicTaskRunDB | None:
    row: PeriodicTaskRunDB | None = await session.scalar(
        select(PeriodicTaskRunDB).where(PeriodicTaskRunDB.message_id == message_id)
    )
    return row
