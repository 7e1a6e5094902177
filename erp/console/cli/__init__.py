"""The operator's command line: `python -m erp <command>`, for a terminal, `heroku run` and
`dokku run`.

Every command calls the service function its API route calls, with a session of its own, so
the command line accepts, refuses and records exactly what the API does; `--json` prints the
JSON the route answers. Changes are in the change log as the command line's, or as the
superuser `--as EMAIL` names. Exit codes (erp.console.cli.common): 0 done, 1 a check or task failed
or a service did not answer, 2 bad input or usage, 3 not found, 4 conflict, 5 timed out.
"""

from __future__ import annotations

import sys

import typer

from erp.console.cli import accounts, common, doctor, ledger, schedules, tasks

app = typer.Typer(
    name="erp",
    help="Operate erp: schedules, the run ledger, tasks, accounts, and a health check (doctor).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("create-superuser")(accounts.create_superuser)
app.command("create-token")(accounts.create_token)
app.command("login-link")(accounts.login_link)
app.add_typer(schedules.app, name="schedules")
app.add_typer(ledger.runs_app, name="runs")
app.add_typer(ledger.alerts_app, name="alerts")
app.command("forecast")(ledger.forecast)
app.add_typer(tasks.app, name="tasks")
app.command("doctor")(doctor.doctor)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code."""
    try:
        app(args=argv, prog_name="python -m erp")
    except SystemExit as stop:
        if isinstance(stop.code, str):  # e.g. the settings' "erp: configuration error: ..."
            print(stop.code, file=sys.stderr)
            return common.EXIT_FAILED
        return stop.code or 0
    return 0
