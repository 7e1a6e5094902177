"""The last outcome of each schedule of a page: its latest occurrence in the run ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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


@dataclass(frozen=True)
class RecentRun:
    """What a schedule's recent history shows of one occurrence (a sparkline's bar; for the
    newest, the last run's duration and lateness)."""

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
    rows = await session.execute(
        text(
            """
            SELECT page.id, latest.scheduled_at, latest.state, latest.skip_reason, latest.started_at,
                latest.finished_at, latest.lateness_seconds
            FROM unnest(CAST(:ids AS bigint[])) AS page(id)
            CROSS JOIN LATERAL (
                SELECT run.scheduled_at, run.state, run.skip_reason, run.started_at, run.finished_at,
                    run.lateness_seconds
                FROM periodic_task_runs AS run
                WHERE run.periodic_task_id = page.id
                ORDER BY run.scheduled_at DESC LIMIT :count
            ) AS latest
            """
        ),
        {"ids": list(periodic_task_ids), "count": count},
    )
    history: dict[int, list[RecentRun]] = {task_id: [] for task_id in periodic_task_ids}
    for task_id, *columns in rows:
        history[task_id].append(RecentRun(*columns))
    return history
