"""Mirroring Celery's `beat_schedule` setting into the periodic_tasks table.

Entries are written with `from_config = true`, updated when the setting changes and removed
when removed from it; an admin's enable/disable choice survives restarts. A schedule is read
through Celery's public attributes (a crontab's expanded field sets, an interval's
`run_every`), so whatever Celery accepts (`hour=[9, 17]`, `minute=range(0, 60, 5)`,
`day_of_week={1, 2, 3, 4, 5}`, strings) is stored as a crontab text Celery parses back to the
same sets.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_schedule
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from erp.tasks.calendar.kinds import SCHEDULE_COLUMNS, ScheduleKind, schedule_column
from erp.tasks.scheduler_models import SCHEDULE_MODELS, PeriodicTaskDB, ScheduleRow

logger = logging.getLogger(__name__)

# (field, lowest, highest) of a crontab, in Celery's numbering (day_of_week: Sunday is 0).
CRONTAB_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day_of_week", 0, 6),
    ("day_of_month", 1, 31),
    ("month_of_year", 1, 12),
)


def crontab_field_text(values: set[int], lowest: int, highest: int) -> str:
    """A crontab field's text for a set of values: `*`, a step (`*/15`, `1-23/2`) or a list.

    The full range is written `*` and an even step to the end of the range as a step, so the
    stored text says what was meant (a wildcard or step hour changes how DST days are handled).
    """
    ordered = sorted(values)
    if ordered == list(range(lowest, highest + 1)):
        return "*"
    if len(ordered) > 2:
        step = ordered[1] - ordered[0]
        evenly_spaced = all(later - earlier == step for earlier, later in itertools.pairwise(ordered))
        if step > 1 and evenly_spaced and ordered[-1] + step > highest:
            return f"*/{step}" if ordered[0] == lowest else f"{ordered[0]}-{highest}/{step}"
    return ",".join(str(value) for value in ordered)


def schedule_fields(schedule: Any, default_timezone: str) -> tuple[ScheduleKind, dict[str, Any]] | None:
    """The kind and table fields of a beat_schedule entry's schedule; None if not storable."""
    if isinstance(schedule, (int, float, timedelta)):
        schedule = celery_schedule(schedule)
    if isinstance(schedule, celery_crontab):
        fields: dict[str, Any] = {
            name: crontab_field_text(getattr(schedule, name), lowest, highest)
            for name, lowest, highest in CRONTAB_FIELDS
        }
        # Celery 5.3's crontab has no zone of its own: it fires in the app's time zone.
        fields["timezone"] = default_timezone
        return "crontab", fields
    if type(schedule) is celery_schedule:
        seconds = schedule.run_every.total_seconds()
        if seconds.is_integer():
            return "interval", {"every": int(seconds), "period": "seconds"}
        return "interval", {"every": int(schedule.run_every / timedelta(microseconds=1)), "period": "microseconds"}
    return None


def entry_values(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The periodic_tasks columns of a beat_schedule entry, but its schedule."""
    options = entry.get("options", {})
    expires = options.get("expires")
    return {
        "task": entry["task"],
        "args": list(entry.get("args", ())),
        "kwargs": dict(entry.get("kwargs", {})),
        "queue": options.get("queue"),
        "exchange": options.get("exchange"),
        "routing_key": options.get("routing_key"),
        "priority": options.get("priority"),
        "expire_seconds": expires if isinstance(expires, int) else None,
    }


def sync_config_entries(engine: Engine, entries: Mapping[str, Mapping[str, Any]], default_timezone: str) -> None:
    """Mirror `beat_schedule` into the table (from_config rows); keep admins' enabled flag."""
    with Session(engine) as session, session.begin():
        for name, entry in entries.items():
            _upsert(session, name, entry, default_timezone)
        removed = session.execute(
            delete(PeriodicTaskDB).where(PeriodicTaskDB.from_config, PeriodicTaskDB.name.not_in(list(entries)))
        ).rowcount  # type: ignore[attr-defined]
    if removed:
        logger.info("beat: removed %d schedule(s) no longer in beat_schedule", removed)


def _upsert(session: Session, name: str, entry: Mapping[str, Any], default_timezone: str) -> None:
    schedule = schedule_fields(entry["schedule"], default_timezone)
    if schedule is None:
        logger.warning("beat: beat_schedule entry %r has a schedule type the database cannot store; skipped", name)
        return
    kind, fields = schedule
    values = {
        **entry_values(entry),
        **dict.fromkeys(SCHEDULE_COLUMNS),
        schedule_column(kind): _get_or_create(session, SCHEDULE_MODELS[kind], fields).id,
    }
    existing = session.scalar(select(PeriodicTaskDB).where(PeriodicTaskDB.name == name))
    if existing is None:
        # Two beats starting together may both insert: the name is unique, the loser does nothing.
        session.execute(
            insert(PeriodicTaskDB)
            .values(name=name, from_config=True, description="from the beat_schedule setting", **values)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    elif not existing.from_config:
        logger.warning("beat: beat_schedule entry %r clashes with a task created through the API; skipped", name)
    elif any(getattr(existing, column) != value for column, value in values.items()):
        for column, value in values.items():
            setattr(existing, column, value)
        existing.next_run_at = None


def _get_or_create(session: Session, model: type[ScheduleRow], fields: dict[str, Any]) -> ScheduleRow:
    """An identical schedule row if there is one (schedules are shared), else a new one."""
    row = cast(ScheduleRow | None, session.scalars(select(model).filter_by(**fields).limit(1)).first())
    if row is None:
        row = model(**fields)
        session.add(row)
        session.flush()
    return row
