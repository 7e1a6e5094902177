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
    """What a schedule's recent history shows of one occurrence (a sparkline's bar; for the
    newest, the last run's duration and lateness). A tuple: a page reads 3,000 of them, and a
    frozen dataclass costs several times as much to make."""

    scheduled_at: datetime
    state: str
    skip_reason: str | None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lateness_seconds: float | None = None


async def recent_runs(
    periodic_task_ids: Sequence[int], count: int, *, session: AsyncSession
) -> dict[int, list[RecentRun]]:
    """The latest `count` occurrences of each task of a page, newest first, in one query.

    The same LATERAL walk as `last_runs`, `count` rows deep, reading only the columns a history
    and a last run show: 50 schedules x 60 occurrences stay a few kilobytes, and a page that
    shows both needs no query of `last_runs`.
    """
    if not periodic_task_ids:
        return {}
    # One row per task, its occurrences as arrays: a page's 3,000 occurrences as 3,000 rows cost
    # four times as much to decode (scripts/bench_console).
    columns = ("scheduled_at", "state", "skip_reason", "started_at", "finished_at", "lateness_seconds")
    arrays = ", ".join(f"array_agg(run.{name} ORDER BY run.scheduled_at DESC)" for name in columns)
    rows = await session.execute(
        text(
            f"""
            SELECT page.id, latest.* FROM unnest(CAST(:ids AS bigint[])) AS page(id)
            CROSS JOIN LATERAL (
                SELECT {arrays} FROM (
                    SELECT {", ".join(columns)} FROM periodic_task_runs
                    WHERE periodic_task_id = page.id
                    ORDER BY scheduled_at DESC LIMIT :count
                ) AS run
            ) AS latest
            """
        ),
        {"ids": list(periodic_task_ids), "count": count},
    )
    history: dict[int, list[RecentRun]] = {task_id: [] for task_id in periodic_task_ids}
    for task_id, *values in rows.tuples():
        if values[0] is not None:  # no occurrence: the aggregates of no row are null
            history[task_id] = [RecentRun._make(run) for run in zip(*values, strict=True)]
    return history
