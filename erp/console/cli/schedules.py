"""`python -m erp schedules ...`: the periodic tasks, through the services of the admin API.

Each command calls the function its API route calls (erp.tasks.api.periodic_tasks, backfill,
why_not) and prints what the route answers (`--json`: the same JSON), so the command line
accepts, refuses and records exactly what the API does. Changes are in the change log as the
command line's, or as the superuser `--as` names.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from erp.console.cli import common
from erp.console.cli.common import AsOption, JsonOption, ScheduleArgument, YesOption, moment
from erp.console.cli.tasks import wait_for_task
from erp.console.views import status_of
from erp.core.dispatch import TaskAccepted
from erp.tasks.api import periodic_tasks
from erp.tasks.api.backfill import plan_backfill
from erp.tasks.api.periodic_tasks import Actor, schedule_words
from erp.tasks.api.periodic_tasks_router import (
    backfill_out,
    periodic_task_out,
    periodic_task_page,
    run_at_out,
    send_run,
)
from erp.tasks.api.periodic_tasks_schemas import (
    PauseIn,
    PeriodicTaskChangeOut,
    PeriodicTaskCreate,
    PeriodicTaskOut,
    PeriodicTaskUpdate,
    PreviewRun,
)
from erp.tasks.api.task_status_router import router as task_status_routes
from erp.tasks.api.why_not import DEFAULT_TOLERANCE_SECONDS, explain_run_at
from erp.tasks.calendar.kinds import INTERVAL_PERIODS
from erp.tasks.scheduler_models import PeriodicTaskDB

app = typer.Typer(help="Periodic tasks: list, show, create, edit, pause, run, backfill, why not.", no_args_is_help=True)

PREVIEW_COUNT = 5
# A time in --json as the API writes it (UTC as `Z`).
MOMENT_JSON: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)
PREVIEW_RUNS_JSON: TypeAdapter[list[PreviewRun]] = TypeAdapter(list[PreviewRun])

EveryOption = Annotated[int | None, typer.Option(help="an interval schedule: every N periods", show_default=False)]
PeriodOption = Annotated[str, typer.Option(callback=common.one_of(INTERVAL_PERIODS), help="the interval's unit")]
CrontabOption = Annotated[
    str | None,
    typer.Option(help='a crontab schedule: "minute hour day-of-month month day-of-week"', show_default=False),
]
TimezoneOption = Annotated[str | None, typer.Option(help="the crontab's IANA zone (default UTC)", show_default=False)]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="FIELD=VALUE of the API's body, VALUE as JSON where it parses (--set jitter_seconds=30); repeatable",
        show_default=False,
    ),
]


def _schedule_body(every: int | None, period: str, crontab: str | None, timezone: str | None) -> dict[str, Any] | None:
    """The inline schedule the options describe, as the API's body gives it."""
    if every is not None and crontab is not None:
        common.fail(common.EXIT_USAGE, "give --every or --crontab, not both")
    if every is not None:
        if timezone is not None:
            common.fail(common.EXIT_USAGE, "--timezone: only a crontab schedule has a zone")
        return {"kind": "interval", "every": every, "period": period}
    if crontab is None:
        if timezone is not None:
            common.fail(common.EXIT_USAGE, "--timezone needs --crontab")
        return None
    fields = crontab.split()
    if len(fields) != 5:
        common.fail(
            common.EXIT_USAGE,
            f'--crontab: {crontab!r} has {len(fields)} fields; give five: "minute hour day-of-month month day-of-week"',
        )
    names = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    return {"kind": "crontab", **dict(zip(names, fields, strict=True)), "timezone": timezone or "UTC"}


def _set_fields(pairs: list[str] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for pair in pairs or []:
        name, separator, raw = pair.partition("=")
        if not separator or not name.strip():
            common.fail(common.EXIT_USAGE, f"--set: {pair!r} is not FIELD=VALUE")
        try:
            fields[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name.strip()] = raw  # a plain word: the text itself
    return fields


def _request_body(
    given: dict[str, str | None], schedule: dict[str, Any] | None, set_fields: list[str] | None
) -> dict[str, Any]:
    """The API's request body: `--set` fields, then the options given, then the schedule."""
    body = _set_fields(set_fields) | {field: value for field, value in given.items() if value is not None}
    return body if schedule is None else body | {"schedule": schedule}


def _print_task(task: PeriodicTaskOut, as_json: bool, preview: list[PreviewRun] | None = None) -> None:
    if as_json:
        common.print_json(task)
        return
    grid = common.table("field", "value", title=f"periodic task {task.id}: {task.name}")
    last = task.last_run
    rows = {
        "task": task.task,
        "schedule": f"{task.schedule.kind} {json.dumps(task.schedule.fields, default=str)}",
        "enabled": "yes" if task.enabled else f"no ({task.disabled_reason or 'disabled'})",
        "paused": f"by {task.paused_by} at {moment(task.paused_at)}: {task.pause_note}" if task.paused_at else "no",
        "next run": moment(task.next_run_at),
        "last run": "—" if last is None else f"{last.state}, slot {moment(last.scheduled_at)}",
        "failures in a row": str(task.consecutive_failures),
        "runs": str(task.total_run_count),
        "version": str(task.version),
    }
    if task.description:
        rows["description"] = task.description
    for name, value in rows.items():
        grid.add_row(name, value)
    out = common.console()
    out.print(grid)
    if preview:
        out.print(_slots_table(preview))


async def _preview(periodic_task_id: int, *, session: AsyncSession) -> list[PreviewRun]:
    runs = await periodic_tasks.preview_runs(periodic_task_id, PREVIEW_COUNT, session=session)
    return [PreviewRun(scheduled_at=slot, due_at=due) for slot, due in runs]


@app.command("list")
def list_schedules(
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="only enabled, or disabled")] = None,
    paused: Annotated[bool | None, typer.Option("--paused/--not-paused", help="only paused, or not paused")] = None,
    failing: Annotated[bool, typer.Option(help="only those whose last occurrences failed")] = False,
    task: Annotated[str | None, typer.Option(help="exact task name")] = None,
    name: Annotated[str | None, typer.Option(help="part of the name, any case")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    after_id: Annotated[
        int | None,
        typer.Option(min=0, help="the page after this id (quicker than --offset deep into many)", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Periodic tasks by id (--json: the API's page)."""

    async def action(session: AsyncSession) -> tuple[Any, list[tuple[str, str]]]:
        rows, total = await periodic_tasks.list_periodic_tasks(
            session=session,
            enabled=enabled,
            task=task,
            name=name,
            limit=limit,
            offset=offset,
            paused=paused,
            failing=failing,
            after_id=after_id,
        )
        return await periodic_task_page(rows, total, limit, offset, session=session), [
            (schedule_words(row), status_of(row)) for row in rows
        ]

    page, described = common.run(action)
    if as_json:
        common.print_json(page)
        return
    grid = common.table("id", "name", "task", "schedule", "status", "next run (UTC)", "last run")
    for item, (words, status) in zip(page.items, described, strict=True):
        last = "—" if item.last_run is None else item.last_run.state
        grid.add_row(str(item.id), item.name, item.task, words, status, moment(item.next_run_at), last)
    out = common.console()
    out.print(grid)
    more = (
        f"; next page: --after-id {page.items[-1].id}" if page.items and offset + len(page.items) < page.total else ""
    )
    out.print(f"{len(page.items)} of {page.total}{more}", style="dim")


@app.command()
def show(schedule: ScheduleArgument, as_json: JsonOption = False) -> None:
    """A periodic task, its last run and its next slots (--json: the API's answer)."""

    async def action(session: AsyncSession) -> tuple[PeriodicTaskOut, list[PreviewRun]]:
        task = await common.schedule_of(schedule, session=session)
        return await periodic_task_out(task, session=session), await _preview(task.id, session=session)

    task, preview = common.run(action)
    _print_task(task, as_json, preview)


@app.command()
def create(
    name: Annotated[str, typer.Option(help="a unique name", show_default=False)],
    task: Annotated[str, typer.Option(help="the task it sends, e.g. erp.ping", show_default=False)],
    every: EveryOption = None,
    period: PeriodOption = "seconds",
    crontab: CrontabOption = None,
    timezone: TimezoneOption = None,
    description: Annotated[str | None, typer.Option(show_default=False)] = None,
    set_fields: SetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check it and show its schedule and next runs; save nothing")
    ] = False,
    actor_email: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a periodic task, validated as POST /api/v1/admin/periodic-tasks validates it; --dry-run saves nothing."""
    given = {"name": name, "task": task, "description": description}
    body = _request_body(given, _schedule_body(every, period, crontab, timezone), set_fields)

    async def action(session: AsyncSession) -> tuple[PeriodicTaskOut, list[PreviewRun]] | periodic_tasks.CreatePreview:
        data = PeriodicTaskCreate.model_validate(body)
        actor = await common.actor_of(actor_email, session=session)
        if dry_run:
            return await periodic_tasks.preview_create(data, PREVIEW_COUNT, session=session)
        created = await periodic_tasks.create_periodic_task(data, actor, session=session)
        return await periodic_task_out(created, session=session), await _preview(created.id, session=session)

    result = common.run(action)
    if isinstance(result, periodic_tasks.CreatePreview):
        _print_create_dry_run(result, as_json)
        return
    out, preview = result
    _print_task(out, as_json, preview)


def _print_create_dry_run(preview: periodic_tasks.CreatePreview, as_json: bool) -> None:
    runs = [PreviewRun(scheduled_at=slot, due_at=due) for slot, due in preview.next_runs]
    if as_json:
        common.print_json(
            {
                "dry_run": True,
                "fields": preview.fields,
                **_slots_json(preview.schedule, preview.next_run_at, runs),
            }
        )
        return
    out = common.console()
    out.print("dry run: nothing saved")
    grid = common.table("field", "value")
    for field, value in preview.fields.items():
        grid.add_row(field, value if isinstance(value, str) else json.dumps(value, default=str))
    out.print(grid)
    out.print(f"schedule: {preview.schedule}")
    out.print(_slots_table(runs))


@app.command()
def edit(
    schedule: ScheduleArgument,
    name: Annotated[str | None, typer.Option(help="a new name", show_default=False)] = None,
    task: Annotated[str | None, typer.Option(help="another task", show_default=False)] = None,
    every: EveryOption = None,
    period: PeriodOption = "seconds",
    crontab: CrontabOption = None,
    timezone: TimezoneOption = None,
    description: Annotated[str | None, typer.Option(show_default=False)] = None,
    set_fields: SetOption = None,
    version: Annotated[
        int | None, typer.Option(help="the version you read (default: the current one)", show_default=False)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check it and show what would change; save nothing")
    ] = False,
    actor_email: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a periodic task, as PATCH /api/v1/admin/periodic-tasks/{id} does; --dry-run saves nothing."""
    given = {"name": name, "task": task, "description": description}
    body = _request_body(given, _schedule_body(every, period, crontab, timezone), set_fields)
    if not body:
        common.fail(common.EXIT_USAGE, "nothing to change: give --name, --task, --every, --crontab, ... or --set")

    async def action(session: AsyncSession) -> PeriodicTaskOut | periodic_tasks.UpdatePreview:
        data = PeriodicTaskUpdate.model_validate(body)
        current = await common.schedule_of(schedule, session=session)
        expected = current.version if version is None else version
        if dry_run:
            return await periodic_tasks.preview_update(current.id, data, expected, PREVIEW_COUNT, session=session)
        actor = await common.actor_of(actor_email, session=session)
        changed = await periodic_tasks.update_periodic_task(current.id, data, expected, actor, session=session)
        return await periodic_task_out(changed, session=session)

    result = common.run(action)
    if isinstance(result, PeriodicTaskOut):
        _print_task(result, as_json)
        return
    _print_dry_run(result, as_json)


def _print_dry_run(preview: periodic_tasks.UpdatePreview, as_json: bool) -> None:
    runs = [PreviewRun(scheduled_at=slot, due_at=due) for slot, due in preview.next_runs]
    if as_json:
        common.print_json(
            {
                "dry_run": True,
                "changes": preview.changes,
                "version": preview.version,
                **_slots_json(preview.schedule, preview.next_run_at, runs),
            }
        )
        return
    out = common.console()
    if not preview.changes:
        out.print("dry run: nothing would change")
        return
    grid = common.table("field", "now", "would be", title="dry run: nothing saved")
    for field, (old, new) in preview.changes.items():
        grid.add_row(field, json.dumps(old, default=str), json.dumps(new, default=str))
    out.print(grid)
    out.print(f"schedule: {preview.schedule}")
    out.print(_slots_table(runs))


def _slots_json(schedule: str, next_run_at: datetime | None, runs: list[PreviewRun]) -> dict[str, Any]:
    """What a dry run's --json says of the schedule it would save: in words, its next runs."""
    return {
        "schedule": schedule,
        "next_run_at": MOMENT_JSON.dump_python(next_run_at, mode="json"),
        "next_runs": PREVIEW_RUNS_JSON.dump_python(runs, mode="json"),
    }


def _slots_table(runs: list[PreviewRun]) -> Table:
    """The next slots as `show` lists them."""
    upcoming = common.table("next slots (UTC)", "due (jitter added)")
    for run in runs:
        upcoming.add_row(moment(run.scheduled_at), moment(run.due_at))
    return upcoming


Change = Callable[[int, Actor, AsyncSession], Awaitable[PeriodicTaskDB]]


def _change_command(schedule: str, actor_email: str | None, as_json: bool, change: Change) -> None:
    """Run one of the state changes (enable, disable, pause, resume) and print the task after it."""

    async def action(session: AsyncSession) -> PeriodicTaskOut:
        current = await common.schedule_of(schedule, session=session)
        actor = await common.actor_of(actor_email, session=session)
        changed = await change(current.id, actor, session)
        return await periodic_task_out(changed, session=session)

    _print_task(common.run(action), as_json)


@app.command()
def enable(schedule: ScheduleArgument, actor_email: AsOption = None, as_json: JsonOption = False) -> None:
    """Enable a periodic task: beat plans its next occurrence at once."""
    _change_command(
        schedule,
        actor_email,
        as_json,
        lambda task_id, actor, session: periodic_tasks.set_enabled(task_id, True, actor, session=session),
    )


@app.command()
def disable(
    schedule: ScheduleArgument, yes: YesOption = False, actor_email: AsOption = None, as_json: JsonOption = False
) -> None:
    """Disable a periodic task: no occurrence is planned until it is enabled (asks first)."""
    common.confirm(f"disable periodic task {schedule!r}?", yes)
    _change_command(
        schedule,
        actor_email,
        as_json,
        lambda task_id, actor, session: periodic_tasks.set_enabled(task_id, False, actor, session=session),
    )


@app.command()
def pause(
    schedule: ScheduleArgument,
    note: Annotated[str, typer.Option(help="why: shown with the pause and in the change log", show_default=False)],
    actor_email: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pause a periodic task: each occurrence is recorded as skipped (paused) until it is resumed."""

    async def change(task_id: int, actor: Actor, session: AsyncSession) -> PeriodicTaskDB:
        checked = PauseIn(note=note)  # the API's rules for a note: 422 there, exit 2 here
        return await periodic_tasks.pause_periodic_task(task_id, checked.note, actor, session=session)

    _change_command(schedule, actor_email, as_json, change)


@app.command()
def resume(schedule: ScheduleArgument, actor_email: AsOption = None, as_json: JsonOption = False) -> None:
    """Resume a paused periodic task (its count of failures in a row starts again from zero)."""
    _change_command(
        schedule,
        actor_email,
        as_json,
        lambda task_id, actor, session: periodic_tasks.resume_periodic_task(task_id, actor, session=session),
    )


@app.command()
def delete(schedule: ScheduleArgument, yes: YesOption = False, actor_email: AsOption = None) -> None:
    """Delete a periodic task (its runs stay in the ledger, its history in the change log; asks first)."""
    common.confirm(f"delete periodic task {schedule!r}?", yes)

    async def action(session: AsyncSession) -> str:
        current = await common.schedule_of(schedule, session=session)
        actor = await common.actor_of(actor_email, session=session)
        name = current.name
        await periodic_tasks.delete_periodic_task(current.id, current.version, actor, session=session)
        return name

    typer.echo(f"deleted periodic task {common.run(action)!r}")


@app.command("run")
def run_now(
    schedule: ScheduleArgument,
    wait: Annotated[bool, typer.Option("--wait", help="wait for its result (exit 1 if it fails)")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="with --wait: seconds to wait (then exit 5)")] = 300.0,
    actor_email: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a periodic task now with its own options: an occurrence of origin `manual` in the ledger."""

    async def action(session: AsyncSession) -> tuple[str, Any]:
        current = await common.schedule_of(schedule, session=session)
        actor = await common.actor_of(actor_email, session=session)
        message_id = await periodic_tasks.run_periodic_task_now(current.id, actor, send_run, session=session)
        return message_id, actor

    message_id, actor = common.run(action)
    if wait:
        wait_for_task(message_id, timeout, actor, as_json)
        return
    accepted = TaskAccepted(task_id=message_id, status_url=f"{task_status_routes.prefix}/{message_id}")
    if as_json:
        common.print_json(accepted)
    else:
        typer.echo(f"sent: task {accepted.task_id} (python -m erp tasks wait {accepted.task_id})")


@app.command()
def backfill(
    schedule: ScheduleArgument,
    start: Annotated[str, typer.Option("--from", help="the first slot considered (ISO 8601, UTC unless an offset)")],
    end: Annotated[str, typer.Option("--to", help="the last slot considered (inclusive; not in the future)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the slots it would plan and those already held; write nothing")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the occurrences of a past range, each with its own slot; slots the ledger holds are left alone."""
    first, last = common.parse_time(start, "--from"), common.parse_time(end, "--to")
    if last < first:
        common.fail(common.EXIT_USAGE, "--to is before --from")

    async def action(session: AsyncSession) -> Any:
        current = await common.schedule_of(schedule, session=session)
        return await plan_backfill(current.id, first, last, session=session, dry_run=dry_run)

    result = common.run(action)
    out = backfill_out(result)
    if as_json:
        body = out.model_dump(mode="json")
        if dry_run:
            body |= {
                "dry_run": True,
                "new_slots": [slot.isoformat() for slot in result.new_slots],
                "recorded_slots": [slot.isoformat() for slot in result.recorded_slots],
            }
        common.print_json(body)
        return
    verb = "would plan" if dry_run else "planned"
    typer.echo(
        f"{verb} {out.planned} occurrence(s); {out.already_recorded} already in the ledger"
        f" (slots {moment(out.first_slot)} to {moment(out.last_slot)} UTC)"
    )
    if dry_run:
        grid = common.table("slot (UTC)", "")
        for slot in result.new_slots:
            grid.add_row(moment(slot), "new")
        for slot in result.recorded_slots:
            grid.add_row(moment(slot), "already in the ledger")
        common.console().print(grid)


@app.command()
def why(
    schedule: ScheduleArgument,
    at: Annotated[str, typer.Option("--at", help="the moment asked about (ISO 8601, UTC unless an offset)")],
    tolerance: Annotated[
        int, typer.Option(min=0, max=3600, help="seconds around it a slot may be")
    ] = DEFAULT_TOLERANCE_SECONDS,
    as_json: JsonOption = False,
) -> None:
    """What happened at a time: its occurrence, or why there is none."""
    moment_asked = common.parse_time(at, "--at")

    async def action(session: AsyncSession) -> Any:
        current = await common.schedule_of(schedule, session=session)
        return run_at_out(await explain_run_at(current.id, moment_asked, tolerance, session=session))

    answer = common.run(action)
    if as_json:
        common.print_json(answer)
        return
    if answer.run is not None:
        run = answer.run
        typer.echo(f"slot {moment(run.scheduled_at)} UTC: {run.state} (origin {run.origin}, run {run.id})")
    for sentence, reason in zip(answer.explanation, answer.reasons, strict=False):
        typer.echo(f"- {sentence} [{reason}]")
    if answer.nearest_slots:
        typer.echo("nearest slots: " + ", ".join(moment(slot) for slot in answer.nearest_slots))


@app.command()
def changes(
    schedule: ScheduleArgument,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """Who changed what, newest first (the change log)."""

    async def action(session: AsyncSession) -> list[PeriodicTaskChangeOut]:
        current = await common.schedule_of(schedule, session=session)
        rows = await periodic_tasks.list_changes(current.id, session=session, limit=limit, offset=offset)
        return [PeriodicTaskChangeOut.model_validate(row, from_attributes=True) for row in rows]

    rows = common.run(action)
    if as_json:
        common.print_json(rows)
        return
    grid = common.table("when (UTC)", "action", "by", "changes")
    for row in rows:
        by = row.actor_email or periodic_tasks.COMMAND_LINE_ACTOR
        grid.add_row(moment(row.changed_at), row.action, by, json.dumps(row.changes, default=str))
    common.console().print(grid)
