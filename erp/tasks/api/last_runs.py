"""The last outcome of each schedule of a page: its latest occurrence in the run ledger."""

from __future__ import annotations

from collections.abc import Sequence

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
