"""Managing periodic tasks: the service behind the admin API (plain async functions).

Every change bumps the row's version, recomputes `next_run_at` when the schedule could have
changed (beat is NOTIFYed by a trigger and picks it up at once), and writes a change record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from erp.core.celery_app import celery_app
from erp.core.clock import utcnow
from erp.core.errors import ConflictError, InvalidInputError, NotFoundError
from erp.tasks.api.periodic_tasks_schemas import PeriodicTaskCreate, PeriodicTaskUpdate, schedule_spec
from erp.tasks.calendar import schedules
from erp.tasks.calendar.kinds import SCHEDULE_COLUMNS, SCHEDULE_KINDS, schedule_column
from erp.tasks.calendar.schedules import ScheduleSpec, jitter_offset
from erp.tasks.calendar.words import describe
from erp.tasks.periodic_messages import routing_problem
from erp.tasks.scheduler_models import (
    SCHEDULE_MODELS,
    BrokenScheduleError,
    PeriodicTaskChangeDB,
    PeriodicTaskDB,
    PeriodicTaskRunDB,
    compute_next_run_at,
)

logger = logging.getLogger(__name__)

# Changing any of these can move the next run.
RESCHEDULING_FIELDS = {"start_time", "enabled", "one_off", *SCHEDULE_COLUMNS}
MAX_PREVIEW = 100
# How many runs after the first are computed to validate a schedule when it is saved.
VALIDATION_RUNS = 3
# Who paused a task paused from the command line with no user named (`python -m erp ... --as`).
COMMAND_LINE_ACTOR = "command line"
# Changing any of these changes where the task's messages go.
ROUTING_FIELDS = {"task", "queue", "exchange", "routing_key"}
# A name search (`name ILIKE '%part%'`) matching at most this many schedules reads its matches
# through the trigram index and sorts them (1,000 rows at most: about a millisecond); one
# matching more walks the ids in order and stops at the page's end (a match in every N / 1,000
# rows or closer). Left to choose, PostgreSQL guesses how many names a pattern matches (a rare
# one as 1 % of them) and walks the ids for it, reading all 100,000 rows to find 25: 100 ms
# against 1.5 ms (docs/benchmarks.md, bench_indexes). The count, made first, says which it is.
NAME_SEARCH_SORTED_MATCHES = 1_000


class Actor(Protocol):
    """Who made a change, as the change log records it (a Caller, or beat's own identity)."""

    @property
    def user_id(self) -> int | None: ...

    @property
    def email(self) -> str | None: ...


class PeriodicTaskNotFound(NotFoundError):
    pass


class PeriodicTaskConflict(ConflictError):
    """A name clash or a stale version."""


class InvalidPeriodicTask(InvalidInputError):
    """Input that passed the schema but not the rules (unknown task, bad crontab)."""


class PauseConflict(ConflictError):
    """Pausing a paused task, or resuming one that is not paused."""


def schedule_words(task: PeriodicTaskDB) -> str:
    """The task's schedule in one English phrase ("every day at 02:30 Europe/Berlin")."""
    try:
        spec = task.get_schedule()
    except BrokenScheduleError as error:
        return f"cannot be read: {error}"
    return spec_words(spec)


def spec_words(spec: ScheduleSpec) -> str:
    """A schedule already read, in one English phrase, or why it cannot be put in words."""
    try:
        return describe(spec)
    except (ValueError, TypeError) as error:
        return f"cannot be read: {error}"


def registered_task_names() -> list[str]:
    """Tasks a schedule may name: those of our task modules (Celery's own are left out)."""
    celery_app.loader.import_default_modules()
    return sorted(name for name in celery_app.tasks if not name.startswith("celery."))


def _check_routing(task: PeriodicTaskDB) -> None:
    problem = routing_problem(
        celery_app, task.task, queue=task.queue, exchange=task.exchange, routing_key=task.routing_key
    )
    if problem is not None:
        raise InvalidPeriodicTask(f"routing: its messages would reach no queue: {problem}")


def _check_task_name(task: str) -> None:
    if task not in registered_task_names():
        raise InvalidPeriodicTask(
            f"task {task!r} is not registered; schedulable tasks: {', '.join(registered_task_names())}"
        )


async def _schedule_columns(data: PeriodicTaskCreate | PeriodicTaskUpdate, *, session: AsyncSession) -> dict[str, Any]:
    """The four schedule foreign keys for an inline or referenced schedule (validated)."""
    columns: dict[str, Any] = dict.fromkeys(SCHEDULE_COLUMNS)
    if data.schedule is not None:
        spec = schedule_spec(data.schedule)
        try:
            schedules.validate(spec)
        except schedules.ScheduleError as error:
            raise InvalidPeriodicTask(f"schedule: {error}") from None
        row = SCHEDULE_MODELS[data.schedule.kind](**data.schedule.model_dump(exclude={"kind"}))
        session.add(row)
        await session.flush()
        columns[schedule_column(data.schedule.kind)] = row.id
        return columns
    for kind in SCHEDULE_KINDS:
        column = schedule_column(kind)
        schedule_id = getattr(data, column)
        if schedule_id is not None:
            if await session.get(SCHEDULE_MODELS[kind], schedule_id) is None:
                raise InvalidPeriodicTask(f"{column} {schedule_id} does not exist")
            columns[column] = schedule_id
            return columns
    raise InvalidPeriodicTask("a schedule is required")


async def _refresh_next_run(task: PeriodicTaskDB, *, session: AsyncSession) -> None:
    """Recompute next_run_at after the schedule could have changed (relationships reloaded)."""
    await session.flush()
    await session.refresh(task, list(SCHEDULE_KINDS))
    try:
        next_run_at = compute_next_run_at(task, utcnow())
        if next_run_at is not None:
            # Validated by computing what beat will compute: the runs after the first too.
            schedules.upcoming(task.get_schedule(), after=next_run_at, count=VALIDATION_RUNS)
    except schedules.ScheduleError as error:
        raise InvalidPeriodicTask(f"schedule: {error}") from None
    except (OverflowError, ValueError) as error:
        raise InvalidPeriodicTask(f"schedule: its next run cannot be computed ({error})") from None
    if not task.enabled:
        task.next_run_at = None
        return
    task.next_run_at = next_run_at
    if task.next_run_at is None:
        raise InvalidPeriodicTask("this schedule has no future run (start_time, expires or clocked_time are past)")
    task.disabled_reason = None


def _record(task: PeriodicTaskDB, action: str, actor: Actor, changes: dict[str, Any], *, session: AsyncSession) -> None:
    session.add(
        PeriodicTaskChangeDB(
            periodic_task_id=task.id,
            periodic_task_name=task.name,
            action=action,
            actor_user_id=actor.user_id,
            actor_email=actor.email,
            changes=changes,
        )
    )


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def _commit_or_conflict(name: str, *, session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError as error:
        await session.rollback()
        if "uq_periodic_tasks_name" in str(error.orig):
            raise PeriodicTaskConflict(f"a periodic task named {name!r} already exists") from None
        raise


async def get_periodic_task(periodic_task_id: int, *, session: AsyncSession, lock: bool = False) -> PeriodicTaskDB:
    """The task; with `lock`, its row stays locked until commit (two admins edit in turn)."""
    query = select(PeriodicTaskDB).where(PeriodicTaskDB.id == periodic_task_id)
    if lock:
        query = query.with_for_update(of=PeriodicTaskDB).execution_options(populate_existing=True)
    task = await session.scalar(query)
    if task is None:
        raise PeriodicTaskNotFound(f"periodic task {periodic_task_id} does not exist")
    return task


async def get_periodic_task_by_name(name: str, *, session: AsyncSession) -> PeriodicTaskDB:
    """The task of this exact name (names are unique): how an operator names one at a terminal."""
    task = await session.scalar(select(PeriodicTaskDB).where(PeriodicTaskDB.name == name))
    if task is None:
        raise PeriodicTaskNotFound(f"no periodic task named {name!r}")
    return task


async def list_periodic_tasks(
    *,
    session: AsyncSession,
    enabled: bool | None,
    task: str | None,
    name: str | None,
    limit: int,
    offset: int,
    paused: bool | None = None,
    failing: bool = False,
    after_id: int | None = None,
    count_limit: int | None = None,
) -> tuple[list[PeriodicTaskDB], int]:
    """A page of tasks by id, and how many match. `after_id` pages by key (the console's pages
    at 100,000 schedules: an OFFSET would read every row before the page); `total` counts the
    filter, not the page. With `count_limit`, the count stops past that many matches (it is
    then `count_limit + 1`): counting reads every match, 100,000 rows for the whole table, more
    than the page itself costs."""
    query = select(PeriodicTaskDB)
    if enabled is not None:
        query = query.where(PeriodicTaskDB.enabled.is_(enabled))
    if task is not None:
        query = query.where(PeriodicTaskDB.task == task)
    if name is not None:
        query = query.where(PeriodicTaskDB.name.icontains(name, autoescape=True))
    if paused is not None:
        query = query.where(PeriodicTaskDB.paused_at.is_not(None) if paused else PeriodicTaskDB.paused_at.is_(None))
    if failing:
        query = query.where(PeriodicTaskDB.consecutive_failures > 0)
    # The bound is written into the statement: as a parameter, PostgreSQL's generic plan of the
    # prepared statement guesses a tenth of the table for it and stops a sequential scan early
    # instead of reading a rare name's matches through the trigram index (44 ms against 4 ms).
    counted = (
        query if count_limit is None else query.limit(bindparam("count_limit", count_limit + 1, literal_execute=True))
    )
    total = await session.scalar(select(func.count()).select_from(counted.subquery())) or 0
    if after_id is not None:
        query = query.where(PeriodicTaskDB.id > after_id)
    order: ColumnElement[int] | InstrumentedAttribute[int] = PeriodicTaskDB.id
    if name is not None and total <= NAME_SEARCH_SORTED_MATCHES:
        # Not the primary key's order, so PostgreSQL cannot walk it: a rare name's few matches
        # are read through the trigram index and sorted (same rows, same order).
        order = PeriodicTaskDB.id + 0
    rows = await session.scalars(query.order_by(order).limit(limit).offset(offset))
    return list(rows), total


async def _apply_create(data: PeriodicTaskCreate, *, session: AsyncSession) -> tuple[PeriodicTaskDB, dict[str, Any]]:
    """The new task checked (task name, unique name, schedule, routing, its next runs) and
    flushed, not yet committed, and the fields the change log records for it."""
    _check_task_name(data.task)
    if await session.scalar(select(PeriodicTaskDB.id).where(PeriodicTaskDB.name == data.name)) is not None:
        raise PeriodicTaskConflict(f"a periodic task named {data.name!r} already exists")
    fields = data.model_dump(exclude_none=True, exclude={"schedule", *SCHEDULE_COLUMNS})
    task = PeriodicTaskDB(**fields, **await _schedule_columns(data, session=session))
    _check_routing(task)
    session.add(task)
    await _refresh_next_run(task, session=session)
    await session.flush()
    return task, {key: _jsonable(value) for key, value in fields.items()}


async def create_periodic_task(data: PeriodicTaskCreate, actor: Actor, *, session: AsyncSession) -> PeriodicTaskDB:
    task, fields = await _apply_create(data, session=session)
    _record(task, "create", actor, fields, session=session)
    await _commit_or_conflict(data.name, session=session)
    return task


async def _apply_update(
    periodic_task_id: int, data: PeriodicTaskUpdate, expected_version: int, *, session: AsyncSession
) -> tuple[PeriodicTaskDB, dict[str, list[Any]]]:
    """The change applied to the locked row (validated, next run recomputed), not yet committed,
    and what changed: {field: [old, new]}."""
    task = await get_periodic_task(periodic_task_id, session=session, lock=True)
    if task.version != expected_version:
        raise PeriodicTaskConflict(
            f"periodic task {periodic_task_id} is at version {task.version}, not {expected_version}: "
            "someone else changed it; read it again and reapply your change"
        )
    values = data.model_dump(exclude_unset=True, exclude={"version", "schedule", *SCHEDULE_COLUMNS})
    if "task" in values:
        _check_task_name(values["task"])
    if data.schedule is not None or any(getattr(data, column) is not None for column in SCHEDULE_COLUMNS):
        values.update(await _schedule_columns(data, session=session))
    changes = {
        field: [_jsonable(getattr(task, field)), _jsonable(value)]
        for field, value in values.items()
        if getattr(task, field) != value
    }
    for field, value in values.items():
        setattr(task, field, value)
    if ROUTING_FIELDS & changes.keys():
        _check_routing(task)
    if changes:
        task.version += 1
        if RESCHEDULING_FIELDS & changes.keys():
            await _refresh_next_run(task, session=session)
    return task, changes


async def update_periodic_task(
    periodic_task_id: int, data: PeriodicTaskUpdate, expected_version: int, actor: Actor, *, session: AsyncSession
) -> PeriodicTaskDB:
    task, changes = await _apply_update(periodic_task_id, data, expected_version, session=session)
    if changes:
        _record(task, "update", actor, changes, session=session)
    await _commit_or_conflict(task.name, session=session)
    return task


@dataclass(frozen=True)
class UpdatePreview:
    """What an update would do, saved or not: the fields it changes ({field: [old, new]}), the
    version it would make, and the next runs (slot, due time) the task would then have."""

    changes: dict[str, list[Any]]
    version: int
    schedule: str  # in words
    next_run_at: datetime | None
    next_runs: list[tuple[datetime, datetime]]


async def preview_update(
    periodic_task_id: int, data: PeriodicTaskUpdate, expected_version: int, count: int, *, session: AsyncSession
) -> UpdatePreview:
    """An update's dry run: checked exactly as `update_periodic_task` checks it (the same code,
    name clashes included), then rolled back, so nothing is saved and beat hears nothing."""
    try:
        task, changes = await _apply_update(periodic_task_id, data, expected_version, session=session)
        try:
            await session.flush()
        except IntegrityError as error:
            if "uq_periodic_tasks_name" in str(error.orig):
                raise PeriodicTaskConflict(f"a periodic task named {data.name!r} already exists") from None
            raise
        next_runs = await preview_runs(periodic_task_id, count, session=session)
        return UpdatePreview(changes, task.version, schedule_words(task), task.next_run_at, next_runs)
    finally:
        await session.rollback()


@dataclass(frozen=True)
class CreatePreview:
    """What creating a task would save: the fields the change log would record, the schedule
    in words, and its next runs (slot, due time) as `preview_runs` gives them once saved."""

    fields: dict[str, Any]
    schedule: str  # in words
    next_run_at: datetime | None
    next_runs: list[tuple[datetime, datetime]]


async def preview_create(data: PeriodicTaskCreate, count: int, *, session: AsyncSession) -> CreatePreview:
    """A creation's dry run: checked exactly as `create_periodic_task` checks it (the same code),
    its next runs read by the same planner preview as a saved task's, then rolled back, so
    nothing is saved, no change is recorded and beat hears nothing (a NOTIFY is sent at commit).

    The due times add the jitter of the id the row had in this transaction; a task saved later
    gets another id, so with `jitter_seconds` its due times differ (its slots do not)."""
    try:
        task, fields = await _apply_create(data, session=session)
        next_runs = await preview_runs(task.id, count, session=session)
        return CreatePreview(fields, schedule_words(task), task.next_run_at, next_runs)
    finally:
        await session.rollback()


async def set_enabled(periodic_task_id: int, enabled: bool, actor: Actor, *, session: AsyncSession) -> PeriodicTaskDB:
    task = await get_periodic_task(periodic_task_id, session=session)
    return await update_periodic_task(
        periodic_task_id, PeriodicTaskUpdate(enabled=enabled), task.version, actor, session=session
    )


async def delete_periodic_task(
    periodic_task_id: int, expected_version: int | None, actor: Actor, *, session: AsyncSession
) -> None:
    task = await get_periodic_task(periodic_task_id, session=session, lock=True)
    if expected_version is not None and task.version != expected_version:
        raise PeriodicTaskConflict(
            f"periodic task {periodic_task_id} is at version {task.version}, not {expected_version}"
        )
    _record(task, "delete", actor, {}, session=session)
    await session.delete(task)
    await session.commit()


async def run_periodic_task_now(
    periodic_task_id: int,
    actor: Actor,
    send: Callable[[PeriodicTaskDB, str, datetime], Awaitable[None]],
    *,
    session: AsyncSession,
) -> str:
    """Send one run now with the task's own options, in the run ledger; returns the message id.

    The ledger row (origin `manual`, already `sent`) is committed before the message goes out,
    so a worker that starts it at once finds it; if the send fails, the row says so (revoked).
    """
    task = await get_periodic_task(periodic_task_id, session=session, lock=True)
    scheduled_at = utcnow()
    # Its id is random: a manual run never collides with one of beat's.
    run = PeriodicTaskRunDB(
        periodic_task_id=task.id,
        periodic_task_name=task.name,
        task_name=task.task,
        origin="manual",
        scheduled_at=scheduled_at,
        due_at=scheduled_at,
        message_id=str(uuid.uuid4()),
        state="sent",
        sent_at=scheduled_at,
    )
    session.add(run)
    task.total_run_count += 1
    task.last_run_at = scheduled_at
    _record(task, "run", actor, {"message_id": run.message_id}, session=session)
    await session.commit()
    try:
        await send(task, run.message_id, scheduled_at)
    except BaseException as error:
        await session.execute(
            update(PeriodicTaskRunDB)
            .where(PeriodicTaskRunDB.id == run.id)
            .values(state="revoked", finished_at=utcnow(), error_type=type(error).__name__, error_message="not sent")
        )
        await session.execute(
            update(PeriodicTaskDB)
            .where(PeriodicTaskDB.id == task.id)
            .values(total_run_count=PeriodicTaskDB.total_run_count - 1)
        )
        await session.commit()
        raise
    return run.message_id


async def preview_runs(periodic_task_id: int, count: int, *, session: AsyncSession) -> list[tuple[datetime, datetime]]:
    """The next `count` occurrences as beat would fire them (for a disabled task: once enabled),
    each as (slot, due time): the due time adds the task's stable jitter, as beat does."""
    task = await get_periodic_task(periodic_task_id, session=session)
    spec = task.get_schedule()
    upcoming: list[datetime] = []
    try:
        first = task.next_run_at or compute_next_run_at(task, utcnow())
        if first is not None:
            upcoming = schedules.slots_from(
                spec, first, min(count, MAX_PREVIEW), one_off=task.one_off, expires=task.expires
            )
    except OverflowError:
        # Runs past year 9999 cannot be computed: the preview ends at the last one that can.
        pass
    return [(slot, _due_at(task, slot)) for slot in upcoming]


def _due_at(task: PeriodicTaskDB, slot: datetime) -> datetime:
    try:
        return slot + jitter_offset(task.id, slot, task.jitter_seconds or 0)
    except OverflowError:  # a slot at the very end of year 9999: its jitter cannot be added
        return slot


async def pause_periodic_task(
    periodic_task_id: int, note: str, actor: Actor, *, session: AsyncSession
) -> PeriodicTaskDB:
    """Pause: beat keeps the schedule and records each occurrence as skipped (paused)."""
    task = await get_periodic_task(periodic_task_id, session=session, lock=True)
    if task.paused_at is not None:
        raise PauseConflict(
            f"periodic task {periodic_task_id} is already paused (by {task.paused_by} at"
            f" {task.paused_at.isoformat()}: {task.pause_note})"
        )
    task.paused_at = utcnow()
    # The command line without `--as` has no email: its pauses say so rather than nobody's.
    task.paused_by = actor.email or COMMAND_LINE_ACTOR
    task.pause_note = note
    task.version += 1
    _record(task, "pause", actor, {"paused": [False, True], "pause_note": [None, note]}, session=session)
    await session.commit()
    logger.info("periodic task %r paused by %s: %s", task.name, actor.email, note, extra={"action": "paused"})
    return task


async def resume_periodic_task(periodic_task_id: int, actor: Actor, *, session: AsyncSession) -> PeriodicTaskDB:
    """Resume: the next occurrence is sent again, and the run of failures starts from zero."""
    task = await get_periodic_task(periodic_task_id, session=session, lock=True)
    if task.paused_at is None:
        raise PauseConflict(f"periodic task {periodic_task_id} is not paused")
    changes: dict[str, Any] = {
        "paused": [True, False],
        "pause_note": [task.pause_note, None],
        "paused_by": [task.paused_by, None],
    }
    if task.consecutive_failures:
        changes["consecutive_failures"] = [task.consecutive_failures, 0]
    task.paused_at = task.paused_by = task.pause_note = None
    task.consecutive_failures = 0
    task.version += 1
    _record(task, "resume", actor, changes, session=session)
    await session.commit()
    logger.info("periodic task %r resumed by %s", task.name, actor.email, extra={"action": "resumed"})
    return task


async def list_changes(
    periodic_task_id: int, *, session: AsyncSession, limit: int, offset: int
) -> list[PeriodicTaskChangeDB]:
    rows = await session.scalars(
        select(PeriodicTaskChangeDB)
        .where(PeriodicTaskChangeDB.periodic_task_id == periodic_task_id)
        .order_by(PeriodicTaskChangeDB.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows)
