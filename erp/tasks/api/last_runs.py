"""The last outcome of each schedule of a page: its latest occurrence in the run ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.tasks.scheduler_models import PeriodicTaskRunDB


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


class RecentRun(NamedTuple):
    """The newest occurrence of a schedule as its last run shows it: slot, state, how long it
    took and how late it started."""

    scheduled_at: datetime
    state: str
    skip_reason: str | None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lateness_seconds: float | None = None


class RecentHistory(NamedTuple):
    """A schedule's latest occurrences, newest first, as a sparkline draws them: each one's slot
    in UTC as text ("2030-01-01 00:05:00"), state and skip reason, in three parallel lists; and
    the newest in full, for the last run.

    Lists of text, not a row object per occurrence: a page reads 3,000 of them, and decoding
    3,000 timestamps and formatting them again in Python cost more than the page's query and
    its rendering together (scripts/bench_console)."""

    slots_utc: Sequence[str]
    states: Sequence[str]
    skip_reasons: Sequence[str | None]
    newest: RecentRun | None


NO_HISTORY = RecentHistory((), (), (), None)

# The slot as the console writes it; PostgreSQL formats it, in C, as it reads the row.
_SLOT_UTC = "to_char(scheduled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"


async def recent_runs(
    periodic_task_ids: Sequence[int], count: int, *, session: AsyncSession
) -> dict[int, RecentHistory]:
    """The latest `count` occurrences of each task of a page, newest first, in one query.

    The same LATERAL walk as `last_runs`, `count` rows deep, reading only the columns a history
    and a last run show, one row of arrays per task (3,000 rows cost four times as much to
    decode); only the newest occurrence's times are read as timestamps. A page that shows both
    needs no query of `last_runs`.
    """
    if not periodic_task_ids:
        return {}
    # The aggregates take the rows in the order the subquery reads them, newest first down the
    # (periodic_task_id, scheduled_at) index, as PostgreSQL's documentation of aggregate
    # expressions describes for a sorted subquery: an ORDER BY in each aggregate sorted each one
    # again, twice the time of the whole query. The newest occurrence's times come from a
    # second walk of one row, which keeps the 60 rows of the first narrow.
    rows = await session.execute(
        text(
            f"""
            SELECT page.id, latest.*, newest.* FROM unnest(CAST(:ids AS bigint[])) AS page(id)
            CROSS JOIN LATERAL (
                SELECT array_agg({_SLOT_UTC}), array_agg(state), array_agg(skip_reason)
                FROM (
                    SELECT scheduled_at, state, skip_reason FROM periodic_task_runs
                    WHERE periodic_task_id = page.id ORDER BY scheduled_at DESC LIMIT :count
                ) AS run
            ) AS latest
            LEFT JOIN LATERAL (
                SELECT scheduled_at, started_at, finished_at, lateness_seconds FROM periodic_task_runs
                WHERE periodic_task_id = page.id ORDER BY scheduled_at DESC LIMIT 1
            ) AS newest ON true
            """
        ),
        {"ids": list(periodic_task_ids), "count": count},
    )
    history = dict.fromkeys(periodic_task_ids, NO_HISTORY)
    for task_id, slots, states, reasons, scheduled_at, started_at, finished_at, lateness in rows.tuples():
        if slots is not None:  # no occurrence: the aggregates of no row are null
            last = RecentRun(scheduled_at, states[0], reasons[0], started_at, finished_at, lateness)
            history[task_id] = RecentHistory(slots, states, reasons, last)
    return history
