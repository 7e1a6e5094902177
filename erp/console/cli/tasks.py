"""`python -m erp tasks show|wait`: a task's state, as `GET /api/v1/tasks/{task_id}` answers a
superuser (the same function), and waiting for it to finish."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts.service import COMMAND_LINE, CommandLine
from erp.console.cli import common
from erp.console.cli.common import JsonOption, moment
from erp.core import broker
from erp.core.config import get_settings
from erp.tasks.api.task_status import StatusTools, TaskStatus, task_status

app = typer.Typer(help="Tasks: the state, result or error of one, and waiting for it.", no_args_is_help=True)

# Celery's states after which nothing changes.
FINISHED_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
POLL_SECONDS = 0.5

TaskIdArgument = Annotated[str, typer.Argument(help="the task id (a UUID), as the API or `schedules run` gave it")]


def _checked_id(task_id: str) -> str:
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        common.fail(common.EXIT_USAGE, f"{task_id!r} is not a task id (a UUID)")


async def _read(task_id: str, actor: CommandLine, session: AsyncSession, *, until_finished: float | None) -> TaskStatus:
    """The task's status; with `until_finished`, read again until it finishes or that many
    seconds pass. No transaction stays open between two reads."""
    client = broker.connect(get_settings().result_backend_url)
    deadline = None if until_finished is None else time.monotonic() + until_finished
    try:
        while True:
            status = await task_status(common.reader(actor), task_id, StatusTools(session, client))
            await session.rollback()
            if deadline is None or status.state in FINISHED_STATES or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await client.aclose()


def print_status(status: TaskStatus, as_json: bool) -> None:
    if as_json:
        common.print_json(status)
        return
    grid = common.table("field", "value")
    rows = {
        "task id": status.task_id,
        "state": status.state,
        "task name": status.task_name or "—",
        "schedule": f"{status.periodic_task_name} ({status.periodic_task_id})" if status.periodic_task_id else None,
        "slot": moment(status.scheduled_at) if status.scheduled_at else None,
        "ledger": status.run_state,
        "progress": json.dumps(status.progress) if status.progress else None,
        "result": json.dumps(status.result, default=str) if status.state == "SUCCESS" else None,
        "error": f"{status.error.type}: {status.error.message}" if status.error else None,
        "finished": moment(status.finished_at) if status.finished_at else None,
    }
    for name, value in rows.items():
        if value is not None:
            grid.add_row(name, value)
    common.console().print(grid)


def wait_for_task(task_id: str, timeout: float, actor: CommandLine, as_json: bool) -> None:
    """Wait until the task finishes, print it, and exit: 0 it succeeded, 1 it failed or was
    revoked, 5 it had not finished after `timeout` seconds."""
    status = common.run(lambda session: _read(task_id, actor, session, until_finished=timeout))
    print_status(status, as_json)
    if status.state not in FINISHED_STATES:
        common.fail(common.EXIT_TIMEOUT, f"task {task_id} is still {status.state} after {timeout:g} s")
    if status.state != "SUCCESS":
        raise typer.Exit(common.EXIT_FAILED)


@app.command()
def show(task_id: TaskIdArgument, as_json: JsonOption = False) -> None:
    """The state, progress, result or error of a task."""
    checked = _checked_id(task_id)
    print_status(common.run(lambda session: _read(checked, COMMAND_LINE, session, until_finished=None)), as_json)


@app.command()
def wait(
    task_id: TaskIdArgument,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait (then exit 5)")] = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Wait for a task to finish: exit 0 if it succeeded, 1 if it failed or was revoked, 5 on timeout."""
    wait_for_task(_checked_id(task_id), timeout, COMMAND_LINE, as_json)
