"""What every command shares: exit codes, `--json` or a table, errors as one line, the session,
who a change is recorded as, and naming a schedule by id or by name.

A command runs its work with `run(action)`: one event loop, one session on an engine of its
own (no pool), closed when the command ends. The services take that session exactly as the
API's routes take theirs, so a change is validated, versioned and logged by the same code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from fastapi import HTTPException
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts import service as accounts
from erp.core.broker_wire import BROKER_ERRORS
from erp.core.caller import Caller
from erp.core.db import run_with_session
from erp.core.errors import ConflictError, InvalidInputError, NotFoundError, error_text
from erp.tasks.api import periodic_tasks
from erp.tasks.scheduler_models import PeriodicTaskDB

# The exit codes, stable for scripts (documented in the README's "Command line").
EXIT_OK = 0
EXIT_FAILED = 1  # a check failed, a task failed, PostgreSQL or Redis did not answer
EXIT_USAGE = 2  # bad input or usage (click uses 2 for usage errors too)
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4  # a stale version, a name in use, pausing a paused task
EXIT_TIMEOUT = 5  # waited as long as asked and it had not finished

T = TypeVar("T")
# Columns a table may take when its output is not a terminal.
PIPE_WIDTH = 1000

JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]
AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="ERP_CLI_AS",
        help="the superuser the change log records as making the change (default: the command line)",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="do it without asking")]
ScheduleArgument = Annotated[str, typer.Argument(help="the schedule: its id, or its exact name", show_default=False)]


def console() -> Console:
    """Tables for a person: as wide as the terminal, or, into a pipe or a log, a whole line per
    row (not cut at 80 columns). No markup: a cell's `[1, 2]` is data, not a style."""
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(markup=False, highlight=False, width=width)


def one_of(allowed: Sequence[str]) -> Callable[[Any], Any]:
    """An option's check that each value given is one of `allowed` (a usage error otherwise)."""

    def check(value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if item is not None and item not in allowed:
                raise typer.BadParameter(f"{item!r} is not one of: {', '.join(allowed)}")
        return value

    return check


def fail(code: int, message: str) -> NoReturn:
    """One line on stderr naming what is wrong, and the exit code that says what kind it is."""
    typer.echo(f"erp: {message}", err=True)
    raise typer.Exit(code)


def validation_message(error: ValidationError) -> str:
    """The schema's messages, each at its field, as the API's 422 gives them."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if not isinstance(part, int))
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


# PostgreSQL's, and Redis's and the broker's (OSError among them: a refused connection).
SERVICE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, *BROKER_ERRORS)
_HTTP_EXIT = {404: EXIT_NOT_FOUND, 403: EXIT_USAGE, 409: EXIT_CONFLICT, 422: EXIT_USAGE, 400: EXIT_USAGE}


def run(action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`action(session)` in an event loop of its own; the services' errors become exit codes."""
    try:
        return run_with_session(action)
    except NotFoundError as error:
        fail(EXIT_NOT_FOUND, str(error))
    except ConflictError as error:
        fail(EXIT_CONFLICT, str(error))
    except InvalidInputError as error:
        fail(EXIT_USAGE, str(error))
    except ValidationError as error:
        fail(EXIT_USAGE, validation_message(error))
    except HTTPException as error:  # a function shared with a route (task status) says it as HTTP does
        fail(_HTTP_EXIT.get(error.status_code, EXIT_FAILED), str(error.detail))
    except SERVICE_ERRORS as error:
        # PostgreSQL or Redis away: one line saying which and why (sanitized), not a traceback.
        fail(EXIT_FAILED, f"{error_text(error)} (python -m erp doctor checks each service)")


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    """The API's JSON for the same thing (its response schema), indented, on stdout."""
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [item.model_dump(mode="json") for item in value]
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(*columns: str, title: str | None = None) -> Table:
    """A table of the command line's one look: a bold header, no outer frame."""
    return Table(*columns, title=title, title_justify="left", header_style="bold", show_edge=False, pad_edge=False)


def moment(value: datetime | None) -> str:
    """A time for a table: UTC, to the second; `—` for none."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(value: str, option: str) -> datetime:
    """A time given on the command line: ISO 8601, UTC unless it carries an offset."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(EXIT_USAGE, f"{option}: {value!r} is not a time; give ISO 8601, e.g. 2030-01-01T09:00:00Z")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def schedule_of(reference: str, *, session: AsyncSession) -> PeriodicTaskDB:
    """The schedule an operator named: by id when all digits, else by its exact name."""
    if reference.isdigit():
        return await periodic_tasks.get_periodic_task(int(reference), session=session)
    return await periodic_tasks.get_periodic_task_by_name(reference, session=session)


async def actor_of(email: str | None, *, session: AsyncSession) -> accounts.CommandLine:
    """Who the change log records: the command line itself, or the superuser `--as` names (the
    API's rule for schedules: only superusers change them)."""
    if email is None:
        return accounts.COMMAND_LINE
    user = await accounts.get_user_by_email(email, session=session)
    if not (user.is_superuser and user.is_active):
        raise InvalidInputError(f"--as: {user.email} is not an active superuser; schedules are changed by superusers")
    return accounts.CommandLine(user_id=user.id, email=user.email)


def reader(actor: accounts.CommandLine) -> Caller:
    """The command line reads as a superuser does: it has the deployment's own credentials."""
    return Caller(
        user_id=actor.user_id or 0,
        email=actor.email or periodic_tasks.COMMAND_LINE_ACTOR,
        is_superuser=True,
        organization_id=None,
        role=None,
    )


def interactive() -> bool:
    """Whether a person can be asked: stdin is a terminal."""
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """A destructive command goes ahead with `--yes`, or when a person at a terminal says so."""
    if yes:
        return
    if not interactive():
        fail(EXIT_USAGE, f"{question.rstrip('?')}: add --yes to confirm (no terminal to ask at)")
    if not typer.confirm(question, default=False):
        fail(EXIT_USAGE, "not confirmed: nothing changed")
