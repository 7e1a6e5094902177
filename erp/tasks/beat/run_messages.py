"""The messages of due occurrences: those a planning batch has just recorded, and those read
back from the ledger (planned earlier, by this beat or another).

A batch of a herd publishes what it has just planned with the rows it planned from still in
hand (`just_planned`): reading the occurrences and their tasks back from PostgreSQL, and
marking them sent in a statement of its own, was a tenth of a herd's time. What it could not build here is left planned and goes through
`read_back`, which disables a row whose message cannot be built, saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from erp.core.batch_publisher import OutgoingTask
from erp.tasks.beat import broken_rows
from erp.tasks.beat.run_ledger import DueRun
from erp.tasks.beat.run_planning import Occurrence
from erp.tasks.periodic_messages import outgoing_run
from erp.tasks.scheduler_models import PeriodicTaskDB

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadyRun:
    """A recorded occurrence that is due, with its message."""

    run_id: int
    message: OutgoingTask


def just_planned(
    tasks: Sequence[PeriodicTaskDB],
    occurrences: Sequence[Occurrence],
    recorded: Mapping[tuple[int, datetime], int],
    now: datetime,
) -> list[ReadyRun]:
    """The planned occurrences this batch recorded (`recorded`: their ledger ids by task and
    slot) that are due at `now`, with their messages built from `tasks`, the batch's rows."""
    by_id = {task.id: task for task in tasks}
    ready: list[ReadyRun] = []
    for occurrence in occurrences:
        if occurrence.state != "planned" or occurrence.due_at > now:
            continue  # held, skipped, or due later (jitter): published when due, by read_back
        run_id = recorded.get((occurrence.periodic_task_id, occurrence.scheduled_at))
        if run_id is None:
            continue  # already in the ledger before this batch: not this batch's to send
        try:
            message = outgoing_run(
                by_id[occurrence.periodic_task_id], run_id=occurrence.message_id, scheduled_at=occurrence.scheduled_at
            )
        except Exception:  # left planned: read_back builds it again and disables the row, saying why
            continue
        ready.append(ReadyRun(run_id, message))
    return ready


@dataclass
class ReadBack:
    """The messages of due occurrences read back from the ledger, and those that cannot be sent."""

    ready: list[ReadyRun] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)  # to be revoked: their task is deleted or broken


def read_back(session: Session, due: Sequence[DueRun]) -> ReadBack:
    """Build the message of each due occurrence; a row whose message cannot be built is disabled."""
    result = ReadBack()
    for run in due:
        if run.task is None:
            result.gone.append(run.run_id)
            continue
        try:
            message = outgoing_run(run.task, run_id=run.message_id, scheduled_at=run.scheduled_at)
        except Exception as error:  # its row turned unusable since it was planned
            logger.exception("beat: a run of %r could not be built", run.task.name, extra={"action": "row_failed"})
            result.gone.append(run.run_id)
            broken_rows.disable(
                session, run.task, f"broken: its message could not be built: {type(error).__name__}: {error}"
            )
            continue
        result.ready.append(ReadyRun(run.run_id, message))
    return result
