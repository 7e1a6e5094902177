"""`python -m erp runs|alerts|forecast`: the run ledger across schedules, its alerts, and the
load the schedules will make, read through the services of `/api/v1/admin/...`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from erp.console.cli import common
from erp.console.cli.common import JsonOption, moment
from erp.console.cli.formatting import heatmap_text
from erp.tasks.api import alerts as alert_service
from erp.tasks.api import forecast as forecast_service
from erp.tasks.api.ledger_schemas import AlertPage, RunOut, RunPage, ScheduleLoadOut
from erp.tasks.api.runs import RunCursor, RunFilter, list_runs
from erp.tasks.ledger_kinds import ALERT_KINDS, RUN_STATES, SKIP_REASONS, AlertKind, RunState, SkipReason

runs_app = typer.Typer(help="The run ledger: every occurrence, across schedules.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts raised from the run ledger.", no_args_is_help=True)

ScheduleOption = Annotated[
    str | None, typer.Option("--schedule", help="only this schedule (id or exact name)", show_default=False)
]
StateOption = Annotated[
    list[str] | None,
    typer.Option("--state", callback=common.one_of(RUN_STATES), help="repeat for several", show_default=False),
]
SkipReasonOption = Annotated[
    list[str] | None,
    typer.Option("--skip-reason", callback=common.one_of(SKIP_REASONS), help="repeat for several", show_default=False),
]
FailedOption = Annotated[bool, typer.Option("--failed", help="failed ones (added to --state)")]
SkippedOption = Annotated[bool, typer.Option("--skipped", help="skipped ones (added to --state)")]
WATCHED_ROWS = 50
FIRST_ROWS_SHOWN = 10


def _filter(
    schedule_id: int | None,
    states: list[str] | None,
    skip_reasons: list[str] | None,
    failed: bool,
    skipped: bool,
    late: bool = False,
    late_after: int = 60,
    start: datetime | None = None,
    end: datetime | None = None,
) -> RunFilter:
    # click.Choice has checked them against the ledger's own lists.
    checked_states: tuple[RunState, ...] = tuple(states or ())  # type: ignore[arg-type]
    checked_reasons: tuple[SkipReason, ...] = tuple(skip_reasons or ())  # type: ignore[arg-type]
    return RunFilter(
        periodic_task_id=schedule_id,
        states=checked_states,
        skip_reasons=checked_reasons,
        start=start,
        end=end,
        late=late,
        late_after_seconds=late_after,
        failed=failed,
        skipped=skipped,
    )


async def _schedule_id(reference: str | None, *, session: AsyncSession) -> int | None:
    return None if reference is None else (await common.schedule_of(reference, session=session)).id


def _run_row(run: RunOut) -> tuple[str, ...]:
    late = "—" if run.lateness_seconds is None else f"{run.lateness_seconds:.1f} s"
    outcome = run.skip_reason or run.error_type or ""
    deadline = "missed" if run.start_deadline_missed or run.finish_deadline_missed else ""
    return (
        str(run.id),
        run.periodic_task_name,
        moment(run.scheduled_at),
        run.origin,
        run.state,
        outcome,
        late,
        deadline,
    )


RUN_COLUMNS = ("run", "schedule", "slot (UTC)", "origin", "state", "reason / error", "late", "deadline")


@runs_app.command("list")
def list_ledger_runs(
    schedule: ScheduleOption = None,
    state: StateOption = None,
    skip_reason: SkipReasonOption = None,
    failed: FailedOption = False,
    skipped: SkippedOption = False,
    late: Annotated[bool, typer.Option("--late", help="started late (or not yet), or missed a deadline")] = False,
    late_after: Annotated[int, typer.Option(min=0, max=86_400, help="seconds after its due time that is late")] = 60,
    start: Annotated[str | None, typer.Option("--from", help="slots from (ISO 8601)", show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--to", help="slots before (ISO 8601)", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    before: Annotated[
        str | None,
        typer.Option(
            help="the page after this one: a page's next_before (keyset: as quick a million rows down as at the top)",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Occurrences newest first (--json: the API's page of /api/v1/admin/runs, with its next_before)."""
    first = None if start is None else common.parse_time(start, "--from")
    last = None if end is None else common.parse_time(end, "--to")

    async def action(session: AsyncSession) -> RunPage:
        cursor = None if before is None else RunCursor.parse(before)  # a wrong one: exit 2, naming it
        schedule_id = await _schedule_id(schedule, session=session)
        run_filter = _filter(schedule_id, state, skip_reason, failed, skipped, late, late_after, first, last)
        rows, has_more = await list_runs(run_filter, session=session, limit=limit, offset=offset, before=cursor)
        return RunPage.of(rows, limit, offset, has_more)

    page = common.run(action)
    if as_json:
        common.print_json(page)
        return
    grid = common.table(*RUN_COLUMNS)
    for run in page.items:
        grid.add_row(*_run_row(run))
    out = common.console()
    out.print(grid)
    if page.next_before is not None:
        out.print(f"more: --before {page.next_before}", style="dim")


@runs_app.command()
def watch(
    schedule: ScheduleOption = None,
    state: StateOption = None,
    failed: FailedOption = False,
    skipped: SkippedOption = False,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between two looks at the ledger")] = 2.0,
    duration: Annotated[
        float | None, typer.Option("--for", min=0.1, help="stop after this many seconds (default: Ctrl-C)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow the ledger: the latest occurrences, then each new or changed one (--json: one run per line)."""

    async def action(session: AsyncSession) -> None:
        schedule_id = await _schedule_id(schedule, session=session)
        run_filter = _filter(schedule_id, state, None, failed, skipped)
        seen: dict[int, tuple[str, datetime | None, datetime | None]] = {}
        stop_at = None if duration is None else time.monotonic() + duration
        first = True
        while True:
            rows, _ = await list_runs(run_filter, session=session, limit=WATCHED_ROWS, offset=0)
            latest = [RunOut.model_validate(row, from_attributes=True) for row in reversed(rows)]
            await session.rollback()  # nothing held open while it sleeps
            changed = [run for run in latest if seen.get(run.id) != (run.state, run.started_at, run.finished_at)]
            for run in latest:
                seen[run.id] = (run.state, run.started_at, run.finished_at)
            if first and not as_json:
                typer.echo("  ".join(RUN_COLUMNS))
            _print_runs(changed[-FIRST_ROWS_SHOWN:] if first else changed, as_json)
            first = False
            if stop_at is not None and time.monotonic() >= stop_at:
                return
            await asyncio.sleep(interval if stop_at is None else max(0.0, min(interval, stop_at - time.monotonic())))

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
        common.run(action)


def _print_runs(rows: list[RunOut], as_json: bool) -> None:
    for run in rows:
        if as_json:
            typer.echo(run.model_dump_json())
        else:
            typer.echo("  ".join(_run_row(run)))


@alerts_app.command("list")
def list_alerts(
    delivered: Annotated[
        bool | None, typer.Option("--delivered/--undelivered", help="only delivered, or not (yet) delivered")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(callback=common.one_of(ALERT_KINDS), help="one kind", show_default=False)
    ] = None,
    schedule: ScheduleOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """Alerts newest first, with their delivery (--json: the API's page of /api/v1/admin/alerts)."""
    checked_kind: AlertKind | None = kind  # type: ignore[assignment]  # checked by click.Choice

    async def action(session: AsyncSession) -> AlertPage:
        schedule_id = await _schedule_id(schedule, session=session)
        rows, has_more = await alert_service.list_alerts(
            session=session,
            delivered=delivered,
            kind=checked_kind,
            periodic_task_id=schedule_id,
            limit=limit,
            offset=offset,
        )
        return AlertPage.of(rows, limit, offset, has_more)

    page = common.run(action)
    if as_json:
        common.print_json(page)
        return
    grid = common.table("alert", "raised (UTC)", "kind", "schedule", "message", "delivery")
    for alert in page.items:
        if alert.delivered_at is not None:
            delivery = f"delivered {moment(alert.delivered_at)}"
        else:
            delivery = f"{alert.attempts} attempt(s)" + (f": {alert.last_error}" if alert.last_error else "")
        grid.add_row(
            str(alert.id),
            moment(alert.created_at),
            alert.kind,
            alert.periodic_task_name or "—",
            alert.message,
            delivery,
        )
    common.console().print(grid)


def forecast(
    start: Annotated[
        str | None, typer.Option("--from", help="window start (default: this whole hour)", show_default=False)
    ] = None,
    hours: Annotated[int, typer.Option(min=1, max=24, help="window length")] = 24,
    top: Annotated[int, typer.Option(min=1, max=100, help="how many of the busiest minutes to list")] = 10,
    as_json: JsonOption = False,
) -> None:
    """The schedules' load per minute as a heatmap, hours by minutes, and the busiest minutes (--json: /schedule-load's)."""
    first = (
        datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        if start is None
        else common.parse_time(start, "--from")
    )

    async def action(session: AsyncSession) -> ScheduleLoadOut:
        result = await forecast_service.forecast(first, first + timedelta(hours=hours), session=session)
        return ScheduleLoadOut.of(result, top)

    load = common.run(action)
    if as_json:
        common.print_json(load)
        return
    out = common.console()
    out.print(
        f"{load.total} occurrence(s) from {moment(load.start)} to {moment(load.end)} UTC,"
        f" {load.schedules} schedule(s) ({load.jittered_schedules} with jitter, sent up to their jitter later;"
        f" {load.not_computable} not computable)"
    )
    out.print(heatmap_text(load.start, [minute.occurrences for minute in load.minutes]), markup=False)
    grid = common.table("busiest minutes (UTC)", "occurrences")
    for minute in load.busiest:
        grid.add_row(moment(minute.minute)[:-3], str(minute.occurrences))
    out.print(grid)
