"""Reading the run ledger from the API: occurrences matching a filter, across schedules or of
one, newest first; and the occurrence a message id belongs to (a periodic run's task status)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.errors import InvalidInputError
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


_RUN_ID = re.compile(r"[0-9]{1,18}")


class InvalidRunCursor(InvalidInputError):
    """A `before` that is not a page's `next_before` (422 from the API, exit 2 from the CLI)."""


@dataclass(frozen=True)
class RunCursor:
    """Where a page of the ledger ended: the last row's slot and id (the id breaks ties between
    runs of one slot). Written `<slot, ISO 8601 UTC>,<id>`, e.g. `2030-01-01T02:30:00Z,812`:
    no `+` to be mangled in a query string, and the console's runs page reads it too."""

    scheduled_at: datetime
    run_id: int

    @classmethod
    def after(cls, run: PeriodicTaskRunDB) -> RunCursor:
        return cls(run.scheduled_at, run.id)

    def text(self) -> str:
        return f"{self.scheduled_at.astimezone(UTC).isoformat().replace('+00:00', 'Z')},{self.run_id}"

    @classmethod
    def parse(cls, text: str) -> RunCursor:
        """A page's `next_before`; anything else is refused naming it (never a page guessed)."""
        moment, _, run_id = text.strip().rpartition(",")
        try:
            scheduled_at = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            scheduled_at = None
        # The years a slot is stored in (as the console's runs page reads its cursor), so no
        # offset pushes a time out of what PostgreSQL and Python convert.
        if (
            scheduled_at is None
            or scheduled_at.tzinfo is None
            or not 1970 <= scheduled_at.year <= 2999
            or not _RUN_ID.fullmatch(run_id)
        ):
            raise InvalidRunCursor(f"before: {text[:80]!r} is not a page's next_before (<slot>,<run id>)")
        return cls(scheduled_at, int(run_id))


async def list_runs(
    run_filter: RunFilter,
    *,
    session: AsyncSession,
    limit: int,
    offset: int,
    before: RunCursor | None = None,
) -> tuple[list[PeriodicTaskRunDB], bool]:
    """Occurrences matching the filter, newest slot first; and whether there are more.

    No total count: on a ledger of millions of rows it would cost more than the page.
    `before` (the slot and id of the last row of the previous page) pages by key, as the
    console, the API's `before` and `runs list --before` do: the next page starts down the
    index where the last one ended, as quick at the millionth row as at the first (an offset
    reads and drops every row before its page).
    """
    keyset: list[ColumnElement[bool]] = []
    if before is not None:
        keyset.append(
            tuple_(PeriodicTaskRunDB.scheduled_at, PeriodicTaskRunDB.id)
            < tuple_(literal(before.scheduled_at), literal(before.run_id))
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
