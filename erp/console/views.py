"""What each console page shows, read through the services the API uses.

The schedules, runs, alerts, previews and "why not" answers come from erp.tasks.api (the same
queries, filters and rules as the API's routes); this module only puts them in the shape a page
renders. What the API has no route for yet (the health strip, the overview's lists of
schedules needing attention) is read here, each in one query down an existing index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.console.charts import TimelineMark, TimelineRun, activity_chart, load_heatmap, outcome_of, timeline
from erp.console.sparkline import SPARKLINE_RUNS, sparkline
from erp.core import broker
from erp.core.config import get_settings
from erp.core.errors import InvalidInputError
from erp.core.metrics_router import known_queues
from erp.tasks.api import alerts, forecast, periodic_tasks
from erp.tasks.api.backfill import BackfillResult, plan_backfill
from erp.tasks.api.beat_heartbeats import BeatInstance, beat_instances
from erp.tasks.api.forecast import MinuteSchedules
from erp.tasks.api.last_runs import NO_HISTORY, RecentRun, recent_runs
from erp.tasks.api.runs import InvalidRunCursor, RunCursor, RunFilter, list_runs
from erp.tasks.api.why_not import DEFAULT_TOLERANCE_SECONDS, RunAtAnswer, explain_run_at
from erp.tasks.calendar.specs import CrontabSpec
from erp.tasks.ledger_kinds import ALERT_KINDS, RUN_STATES, SKIP_REASONS, AlertKind, RunState, SkipReason
from erp.tasks.scheduler_models import (
    BrokenScheduleError,
    PeriodicTaskAlertDB,
    PeriodicTaskChangeDB,
    PeriodicTaskDB,
    PeriodicTaskRunDB,
    stale_after_seconds,
)
from erp.tasks.worker_heartbeats import fresh_worker_nodes

logger = logging.getLogger(__name__)

SCHEDULES_PAGE = 50
# The schedules page counts the matches up to this many: an exact count reads every match on
# each page and each live refresh, at 100,000 schedules more than the page's own query.
SCHEDULES_COUNTED = 10_000
RUNS_PAGE = 50
SCHEDULE_RUNS = 25
PREVIEW_SLOTS = 10
CHANGES_SHOWN = 20
ATTENTION_ROWS = 20
# The queue depths of the health strip must not hold a page up while Redis is away.
QUEUE_DEPTH_TIMEOUT_SECONDS = 1.0
SCHEDULE_STATUSES = ("enabled", "disabled", "paused", "failing")


# --- the health strip ------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    beats: list[BeatInstance]
    beat_stale_after: float
    due_last_hour: int
    sent_last_hour: int
    skipped_last_hour: int
    workers: list[str]
    queues: dict[str, broker.QueueStats] | None  # None: Redis did not answer

    @property
    def beats_alive(self) -> int:
        return sum(1 for beat in self.beats if beat.seconds_ago <= self.beat_stale_after)

    @property
    def newest_tick_seconds(self) -> float | None:
        return self.beats[0].seconds_ago if self.beats else None


async def _queues() -> dict[str, broker.QueueStats] | None:
    try:
        return await asyncio.wait_for(broker.queue_stats(known_queues()), QUEUE_DEPTH_TIMEOUT_SECONDS)
    except Exception as error:  # Redis away or slow: the strip says so, the page still answers
        logger.warning("console: queue depths unavailable: %s", type(error).__name__, extra={"action": "console.redis"})
        return None


async def health(*, session: AsyncSession) -> Health:
    """Beat instances and their last ticks, occurrences of the last hour (due, sent, skipped),
    workers whose heartbeat is fresh, and what waits in each queue (how many, and the age of
    the oldest)."""
    # Redis is asked while PostgreSQL answers; _queues never raises.
    queues, (beats, counts, workers) = await asyncio.gather(_queues(), _ledger_health(session))
    settings = get_settings()
    return Health(
        beats=beats,
        beat_stale_after=stale_after_seconds(settings.CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS),
        due_last_hour=counts[0],
        sent_last_hour=counts[1],
        skipped_last_hour=counts[2],
        workers=workers,
        queues=queues,
    )


async def _ledger_health(session: AsyncSession) -> tuple[list[BeatInstance], tuple[int, int, int], list[str]]:
    beats = await beat_instances(await session.connection())
    run = PeriodicTaskRunDB
    hour_ago = func.now() - timedelta(hours=1)
    counts = (
        await session.execute(
            select(
                func.count().filter(run.state != "skipped"),
                func.count().filter(run.sent_at.is_not(None)),
                func.count().filter(run.state == "skipped"),
            ).where(run.scheduled_at >= hour_ago, run.scheduled_at < func.now())
        )
    ).one()
    workers = await fresh_worker_nodes(get_settings().WORKER_LOST_AFTER_SECONDS, session=session)
    return beats, (counts[0], counts[1], counts[2]), workers


# --- rows of schedules -----------------------------------------------------------------------


def words_and_zone(task: PeriodicTaskDB) -> tuple[str, tzinfo]:
    """The schedule in words, and the zone its times are read in (a crontab's own, UTC for the
    others), from one reading of its spec: a page of 50 rows read each twice before, a tenth of
    its time at 100,000 schedules (scripts/bench_console)."""
    try:
        spec = task.get_schedule()
    except BrokenScheduleError as error:
        return f"cannot be read: {error}", UTC
    words = periodic_tasks.spec_words(spec)
    zone: tzinfo = UTC
    if isinstance(spec, CrontabSpec):
        with contextlib.suppress(ValueError, KeyError):  # an unknown zone: its times in UTC
            zone = ZoneInfo(spec.timezone)
    return words, zone


@dataclass(frozen=True)
class LastRun:
    state: str
    skip_reason: str | None
    scheduled_at: datetime
    duration_seconds: float | None
    lateness_seconds: float | None


def last_run_of(run: PeriodicTaskRunDB | RecentRun | None) -> LastRun | None:
    if run is None:
        return None
    duration = None
    if run.started_at is not None and run.finished_at is not None:
        duration = (run.finished_at - run.started_at).total_seconds()
    return LastRun(run.state, run.skip_reason, run.scheduled_at, duration, run.lateness_seconds)


@dataclass(frozen=True)
class ScheduleRow:
    task: PeriodicTaskDB
    words: str
    zone: tzinfo
    last_run: LastRun | None
    history: Any  # the sparkline's Markup

    @property
    def status(self) -> str:
        return status_of(self.task)


def status_of(task: PeriodicTaskDB) -> str:
    if not task.enabled:
        return "disabled"
    if task.paused_at is not None:
        return "auto-paused" if task.paused_by == "auto-pause" else "paused"
    if task.consecutive_failures:
        return "failing"
    return "active"


async def schedule_rows(tasks: Sequence[PeriodicTaskDB], *, session: AsyncSession) -> list[ScheduleRow]:
    """Rows of a page of schedules: the sparkline of each and its last outcome (the newest of
    the sparkline's occurrences), in one query."""
    history = await recent_runs([task.id for task in tasks], SPARKLINE_RUNS, session=session)
    rows = []
    for task in tasks:
        words, zone = words_and_zone(task)
        runs = history.get(task.id, NO_HISTORY)
        rows.append(ScheduleRow(task, words, zone, last_run_of(runs.newest), sparkline(runs)))
    return rows


# --- the overview ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attention:
    failing: list[ScheduleRow]
    paused: list[ScheduleRow]
    overdue: list[ScheduleRow]
    late_runs: list[PeriodicTaskRunDB]
    open_alerts: list[PeriodicTaskAlertDB]

    @property
    def anything(self) -> bool:
        return bool(self.failing or self.paused or self.overdue or self.late_runs or self.open_alerts)


async def attention(*, session: AsyncSession) -> Attention:
    """What needs an operator: failing, paused (by hand or auto) and overdue schedules, late
    occurrences of the last hour, and alerts not delivered yet."""
    common: dict[str, Any] = {"enabled": None, "task": None, "name": None, "limit": ATTENTION_ROWS, "offset": 0}
    failing, _ = await periodic_tasks.list_periodic_tasks(session=session, failing=True, **common)
    paused, _ = await periodic_tasks.list_periodic_tasks(session=session, paused=True, **common)
    grace = timedelta(seconds=get_settings().CELERY_BEAT_MISFIRE_GRACE_SECONDS)
    # Due longer ago than the misfire grace and not sent: beat is behind or away (the due index).
    overdue = list(
        await session.scalars(
            select(PeriodicTaskDB)
            .where(
                PeriodicTaskDB.enabled,
                PeriodicTaskDB.next_run_at.is_not(None),
                PeriodicTaskDB.next_run_at < func.now() - grace,
            )
            .order_by(PeriodicTaskDB.next_run_at)
            .limit(ATTENTION_ROWS)
        )
    )
    now = datetime.now(UTC)
    late_runs, _ = await list_runs(
        RunFilter(late=True, start=now - timedelta(hours=1)), session=session, limit=ATTENTION_ROWS, offset=0
    )
    open_alerts, _ = await alerts.list_alerts(
        session=session, delivered=False, kind=None, periodic_task_id=None, limit=ATTENTION_ROWS, offset=0
    )
    return Attention(
        failing=await schedule_rows(failing, session=session),
        paused=await schedule_rows(paused, session=session),
        overdue=await schedule_rows(overdue, session=session),
        late_runs=late_runs,
        open_alerts=open_alerts,
    )


ACTIVITY_HOURS = 24
ACTIVITY_BUCKET = timedelta(minutes=10)


@dataclass(frozen=True)
class Activity:
    start: datetime
    bucket: timedelta
    buckets: list[dict[str, int]]

    @property
    def chart(self) -> Any:
        return activity_chart(self.buckets, self.start, self.bucket)

    def total(self, outcome: str) -> int:
        return sum(counts.get(outcome, 0) for counts in self.buckets)


async def activity(*, session: AsyncSession, now: datetime | None = None) -> Activity:
    """Occurrences of the last day per ten minutes, by outcome: one grouped query down the
    ledger's scheduled_at index."""
    bucket_seconds = int(ACTIVITY_BUCKET.total_seconds())
    now = now or datetime.now(UTC)
    # Buckets on whole ten minutes, so a refresh moves the chart by a bar, not by a few seconds.
    end = datetime.fromtimestamp((int(now.timestamp()) // bucket_seconds + 1) * bucket_seconds, UTC)
    start = end - timedelta(hours=ACTIVITY_HOURS)
    run = PeriodicTaskRunDB
    index = func.floor(func.extract("epoch", run.scheduled_at - start) / bucket_seconds)
    rows = await session.execute(
        select(index.label("bucket"), run.state, func.count())
        .where(run.scheduled_at >= start, run.scheduled_at < end)
        .group_by(index, run.state)
    )
    buckets: list[dict[str, int]] = [{} for _ in range(ACTIVITY_HOURS * 3600 // bucket_seconds)]
    for position, state, count in rows:
        counts = buckets[int(position)]
        outcome = outcome_of(state)
        counts[outcome] = counts.get(outcome, 0) + count
    return Activity(start=start, bucket=ACTIVITY_BUCKET, buckets=buckets)


# --- the schedules page ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleFilter:
    """The schedules page's GET parameters (bookmarkable); `after` is the keyset cursor."""

    q: str = ""
    task: str = ""
    status: str = ""
    after: int | None = None

    def query(self, **changes: Any) -> dict[str, str]:
        values = {"q": self.q, "task": self.task, "status": self.status, **changes}
        return {key: str(value) for key, value in values.items() if value not in ("", None)}


@dataclass(frozen=True)
class SchedulePage:
    rows: list[ScheduleRow]
    total: int  # at most SCHEDULES_COUNTED + 1
    next_after: int | None

    @property
    def matches(self) -> str:
        """How many schedules match, in words: "1 schedule matches", "more than 10,000 schedules match"."""
        if self.total > SCHEDULES_COUNTED:
            return f"more than {SCHEDULES_COUNTED:,} schedules match"
        return "1 schedule matches" if self.total == 1 else f"{self.total:,} schedules match"


async def schedules_page(filters: ScheduleFilter, *, session: AsyncSession) -> SchedulePage:
    status = filters.status
    tasks, total = await periodic_tasks.list_periodic_tasks(
        session=session,
        enabled={"enabled": True, "disabled": False}.get(status),
        task=filters.task or None,
        name=filters.q or None,
        paused=True if status == "paused" else None,
        failing=status == "failing",
        limit=SCHEDULES_PAGE + 1,
        offset=0,
        after_id=filters.after,
        count_limit=SCHEDULES_COUNTED,
    )
    more = len(tasks) > SCHEDULES_PAGE
    tasks = tasks[:SCHEDULES_PAGE]
    return SchedulePage(
        rows=await schedule_rows(tasks, session=session),
        total=total,
        next_after=tasks[-1].id if more and tasks else None,
    )


# --- one schedule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewSlot:
    slot: datetime
    due: datetime
    clock_change: str | None  # the zone's offset changed since the previous slot (DST)


def preview_slots(preview: Sequence[tuple[datetime, datetime]], zone: tzinfo) -> list[PreviewSlot]:
    """The next slots, each marked where the zone's clocks changed since the one before."""
    slots: list[PreviewSlot] = []
    previous = None
    for slot, due in preview:
        local = slot.astimezone(zone)
        change = None
        if previous is not None and previous.utcoffset() != local.utcoffset():
            change = f"clocks change before it: {previous:%Z} (UTC{previous:%z}) → {local:%Z} (UTC{local:%z})"
        slots.append(PreviewSlot(slot, due, change))
        previous = local
    return slots


@dataclass
class ScheduleDetail:
    row: ScheduleRow
    runs: list[PeriodicTaskRunDB]
    more_runs: bool
    preview: list[PreviewSlot]
    changes: list[PeriodicTaskChangeDB]
    why_not: RunAtAnswer | None = None
    alerts: list[PeriodicTaskAlertDB] = field(default_factory=list)
    backfill: BackfillPlan | None = None

    @property
    def timeline(self) -> Any:
        return runs_timeline(self.runs, self.changes)


def runs_timeline(runs: Sequence[PeriodicTaskRunDB], changes: Sequence[PeriodicTaskChangeDB]) -> Any:
    """The runs shown, along time, with the changes made meanwhile (pauses, edits). It ends at
    the newest of them, not at now, so an unchanged ledger draws the same picture (and its live
    region answers 304)."""
    marks = [TimelineRun(run.scheduled_at, run.state, run.skip_reason, run.started_at, run.finished_at) for run in runs]
    end = max((run.scheduled_at for run in runs), default=datetime.now(UTC))
    return timeline(marks, [change_mark(change) for change in changes], end)


async def schedule_runs_region(periodic_task_id: int, *, session: AsyncSession) -> dict[str, Any]:
    """What the schedule page's live runs region shows: the runs and their timeline."""
    runs, more = await schedule_runs(periodic_task_id, session=session)
    changes = await periodic_tasks.list_changes(periodic_task_id, session=session, limit=CHANGES_SHOWN, offset=0)
    return {"runs": runs, "more_runs": more, "timeline": runs_timeline(runs, changes)}


def change_mark(change: PeriodicTaskChangeDB) -> TimelineMark:
    label = (
        f"{change.changed_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {change.action} by {change.actor_email or 'beat'}"
    )
    note = (change.changes or {}).get("pause_note")
    if change.action == "pause" and isinstance(note, list) and len(note) == 2 and note[1]:
        label += f": {note[1]}"
    return TimelineMark(change.changed_at, change.action, label)


async def schedule_status(periodic_task_id: int, *, session: AsyncSession) -> ScheduleRow:
    task = await periodic_tasks.get_periodic_task(periodic_task_id, session=session)
    return (await schedule_rows([task], session=session))[0]


async def schedule_runs(periodic_task_id: int, *, session: AsyncSession) -> tuple[list[PeriodicTaskRunDB], bool]:
    return await list_runs(RunFilter(periodic_task_id=periodic_task_id), session=session, limit=SCHEDULE_RUNS, offset=0)


async def schedule_detail(
    periodic_task_id: int, *, session: AsyncSession, why_at: datetime | None = None
) -> ScheduleDetail:
    """Status, runs, the next slots as beat will fire them, the change log, its open alerts,
    and "why didn't it run at T?" when asked."""
    row = await schedule_status(periodic_task_id, session=session)
    runs, more = await schedule_runs(periodic_task_id, session=session)
    preview = await periodic_tasks.preview_runs(periodic_task_id, PREVIEW_SLOTS, session=session)
    changes = await periodic_tasks.list_changes(periodic_task_id, session=session, limit=CHANGES_SHOWN, offset=0)
    task_alerts, _ = await alerts.list_alerts(
        session=session, delivered=None, kind=None, periodic_task_id=periodic_task_id, limit=10, offset=0
    )
    detail = ScheduleDetail(
        row=row,
        runs=runs,
        more_runs=more,
        preview=preview_slots(preview, row.zone),
        changes=changes,
        alerts=task_alerts,
    )
    if why_at is not None:
        detail.why_not = await explain_run_at(periodic_task_id, why_at, DEFAULT_TOLERANCE_SECONDS, session=session)
    return detail


@dataclass(frozen=True)
class BackfillPlan:
    """A backfill's dry run, as the schedule page shows it: the range, and what it would do."""

    start: datetime
    end: datetime
    result: BackfillResult | None
    error: str | None

    def field(self, moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


async def backfill_dry_run(
    periodic_task_id: int, start: datetime, end: datetime, *, session: AsyncSession
) -> BackfillPlan:
    """Which slots of a past range a backfill would plan and which the ledger already holds:
    the API's backfill, with its checks, writing nothing."""
    try:
        result = await plan_backfill(periodic_task_id, start, end, session=session, dry_run=True)
    except InvalidInputError as error:
        return BackfillPlan(start, end, None, str(error))
    return BackfillPlan(start, end, result, None)


# --- runs across schedules -------------------------------------------------------------------


def parse_moment(text: str) -> datetime | None:
    """A moment typed into a form: ISO 8601, read as UTC without an offset (what a
    datetime-local input sends); None for anything else or outside 1970-2999."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC) if 1970 <= moment.year <= 2999 else None


@dataclass(frozen=True)
class RunsFilter:
    """The runs page's GET parameters; `before` is the keyset cursor (slot and id of the last row)."""

    states: tuple[RunState, ...] = ()
    skip_reason: SkipReason | None = None
    late: bool = False
    periodic_task_id: int | None = None
    start: datetime | None = None  # slots from (inclusive)
    end: datetime | None = None  # slots before (exclusive)
    before: RunCursor | None = None

    def query(self, **changes: Any) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = [("state", state) for state in self.states]
        if self.skip_reason is not None:
            pairs.append(("skip_reason", self.skip_reason))
        if self.late:
            pairs.append(("late", "1"))
        if self.periodic_task_id is not None:
            pairs.append(("periodic_task_id", str(self.periodic_task_id)))
        for name, moment in (("from", self.start), ("to", self.end)):
            if moment is not None:
                pairs.append((name, moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")))
        pairs.extend((key, str(value)) for key, value in changes.items() if value is not None)
        return pairs


def runs_filter_from(params: Any) -> RunsFilter:
    """The runs filter of the query string; unknown states and reasons are ignored, not errors
    (a bookmark from an older console still opens)."""
    states = tuple(state for state in RUN_STATES if state in params.getlist("state"))
    reason = next((reason for reason in SKIP_REASONS if reason == params.get("skip_reason")), None)
    before = None
    with contextlib.suppress(InvalidRunCursor):  # a mangled bookmark opens the newest page
        before = RunCursor.parse(params["before"]) if params.get("before") else None
    task_id = params.get("periodic_task_id", "")
    return RunsFilter(
        states=states,
        skip_reason=reason,
        late=params.get("late") in ("1", "true", "on"),
        periodic_task_id=int(task_id) if task_id.isdigit() and len(task_id) < 19 else None,
        start=parse_moment(params.get("from", "")),
        end=parse_moment(params.get("to", "")),
        before=before,
    )


@dataclass(frozen=True)
class RunsPage:
    runs: list[PeriodicTaskRunDB]
    next_before: str | None


async def runs_page(filters: RunsFilter, *, session: AsyncSession) -> RunsPage:
    run_filter = RunFilter(
        periodic_task_id=filters.periodic_task_id,
        states=filters.states,
        skip_reasons=() if filters.skip_reason is None else (filters.skip_reason,),
        late=filters.late,
        start=filters.start,
        end=filters.end,
    )
    runs, more = await list_runs(run_filter, session=session, limit=RUNS_PAGE, offset=0, before=filters.before)
    next_before = RunCursor.after(runs[-1]).text() if more and runs else None
    return RunsPage(runs=runs, next_before=next_before)


# --- the load forecast ---------------------------------------------------------------------------

LOAD_HOURS = 24
BUSIEST_SHOWN = 10


def minute_link(moment: datetime) -> str:
    """The load page listing the schedules of one minute (a heatmap cell's link)."""
    return f"/console/load?minute={moment.astimezone(UTC):%Y-%m-%dT%H:%M}#minute"


@dataclass(frozen=True)
class Load:
    forecast: forecast.LoadForecast
    minute: MinuteSchedules | None = None  # the minute clicked, with its schedules

    @property
    def heatmap(self) -> Any:
        return load_heatmap(self.forecast.per_minute, self.forecast.start, minute_link)

    @property
    def busiest(self) -> list[tuple[datetime, int]]:
        return self.forecast.busiest(BUSIEST_SHOWN)


async def load(*, session: AsyncSession, now: datetime | None = None, minute: datetime | None = None) -> Load:
    """The next 24 hours from the current whole hour, from the schedules' definitions (the
    forecast the API's /schedule-load answers with), and with `minute` the schedules behind that
    minute (those of /schedule-load/minute)."""
    start = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    result = await forecast.forecast(start, start + timedelta(hours=LOAD_HOURS), session=session)
    behind = None if minute is None else await forecast.schedules_in_minute(minute, session=session)
    return Load(forecast=result, minute=behind)


# --- alerts --------------------------------------------------------------------------------------

ALERTS_SHOWN = 100


@dataclass(frozen=True)
class AlertsFilter:
    delivered: bool | None = None
    kind: AlertKind | None = None


def alerts_filter_from(params: Any) -> AlertsFilter:
    delivered = {"yes": True, "no": False}.get(params.get("delivered", ""))
    kind = next((kind for kind in ALERT_KINDS if kind == params.get("kind")), None)
    return AlertsFilter(delivered=delivered, kind=kind)


async def alerts_page(filters: AlertsFilter, *, session: AsyncSession) -> tuple[list[PeriodicTaskAlertDB], bool]:
    return await alerts.list_alerts(
        session=session,
        delivered=filters.delivered,
        kind=filters.kind,
        periodic_task_id=None,
        limit=ALERTS_SHOWN,
        offset=0,
    )
