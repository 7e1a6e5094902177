"""The operator command line in-process (typer's CliRunner), against the real PostgreSQL and
Redis: each command, its exit codes, its `--json` against the API's own JSON for the same
thing, and its changes in the change log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from erp.console.cli import app, common
from erp.console.cli.common import EXIT_CONFLICT, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_USAGE
from erp.core import tokens
from tests.support.scheduling import empty_broker

API = "/api/v1/admin/periodic-tasks"
EVERY_10 = {"kind": "interval", "every": 10, "period": "seconds"}


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str, expect: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
        return result

    return invoke


@dataclass(frozen=True)
class Admin:
    user_id: int
    email: str
    headers: dict[str, str]


@pytest.fixture
def admin(clean_tables, make_user, sync_engine):
    """A superuser, with the email `--as` names it by."""
    user = make_user(superuser=True)
    with sync_engine.connect() as connection:
        email = connection.execute(text("SELECT email FROM users WHERE id = :id"), {"id": user.user_id}).scalar()
    return Admin(user.user_id, email, user.headers)


def created(cli, name="nightly export", *options: str) -> dict:
    options = options or ("--every", "10")
    return json.loads(cli("schedules", "create", "--name", name, "--task", "erp.ping", *options, "--json").stdout)


def changes_of(sync_engine, task_id: int) -> list[tuple]:
    with sync_engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT action, actor_user_id, actor_email FROM periodic_task_changes"
                    " WHERE periodic_task_id = :id ORDER BY id"
                ),
                {"id": task_id},
            )
        ]


def test_create_answers_the_apis_json_and_the_change_log_names_the_command_line(cli, admin, api_client, sync_engine):
    task = created(cli, "nightly export", "--crontab", "30 2 * * mon-fri", "--timezone", "Europe/Berlin")
    from_api = api_client.get(f"{API}/{task['id']}", headers=admin.headers).json()
    assert task == from_api  # the same schema, the same values
    assert task["schedule"]["fields"]["day_of_week"] == "mon-fri"
    assert task["schedule"]["fields"]["timezone"] == "Europe/Berlin"
    assert changes_of(sync_engine, task["id"]) == [("create", None, None)]
    listed = json.loads(cli("schedules", "list", "--json").stdout)
    assert listed == api_client.get(API, headers=admin.headers).json()
    table = cli("schedules", "list").stdout
    assert "nightly export" in table and "Europe/Berlin" in table
    assert "nightly export" in cli("schedules", "show", "nightly export").stdout  # by its name
    second = created(cli, "second")
    after = json.loads(cli("schedules", "list", "--after-id", str(task["id"]), "--json").stdout)
    assert [item["id"] for item in after["items"]] == [second["id"]] and after["total"] == 2
    assert f"next page: --after-id {task['id']}" in cli("schedules", "list", "--limit", "1").stdout
    assert json.loads(cli("schedules", "show", str(task["id"]), "--json").stdout) == from_api


def test_bad_input_is_exit_2_naming_what_is_wrong_and_writes_nothing(cli, admin, sync_engine):
    unknown = cli("schedules", "create", "--name", "x", "--task", "erp.nope", "--every", "10", expect=EXIT_USAGE)
    assert "task 'erp.nope' is not registered" in unknown.stderr
    crontab = cli("schedules", "create", "--name", "x", "--task", "erp.ping", "--crontab", "99 * * * *", expect=2)
    assert "minute '99'" in crontab.stderr
    short = cli("schedules", "create", "--name", "x", "--task", "erp.ping", "--crontab", "0 2 *", expect=2)
    assert "has 3 fields; give five" in short.stderr
    schema = cli("schedules", "create", "--name", "x", "--task", "erp.ping", "--set", "jitter_seconds=-1", expect=2)
    assert "jitter_seconds" in schema.stderr
    none = cli("schedules", "create", "--name", "x", "--task", "erp.ping", expect=2)
    assert "a schedule is required" in none.stderr
    period = cli(
        "schedules", "create", "--name", "x", "--task", "erp.ping", "--every", "1", "--period", "weeks", expect=2
    )
    assert "'weeks' is not one of" in period.stderr
    with sync_engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM periodic_tasks WHERE name = 'x'")).scalar()
    assert count == 0


def test_not_found_is_3_and_conflicts_are_4(cli, admin):
    missing = cli("schedules", "show", "999999", expect=EXIT_NOT_FOUND)
    assert missing.stderr.strip() == "erp: periodic task 999999 does not exist"
    cli("schedules", "show", "no such schedule", expect=EXIT_NOT_FOUND)
    created(cli, "taken")
    clash = cli("schedules", "create", "--name", "taken", "--task", "erp.ping", "--every", "5", expect=EXIT_CONFLICT)
    assert "already exists" in clash.stderr
    cli("schedules", "pause", "taken", "--note", "maintenance")
    again = cli("schedules", "pause", "taken", "--note", "twice", expect=EXIT_CONFLICT)
    assert "already paused" in again.stderr
    stale = cli("schedules", "edit", "taken", "--description", "x", "--version", "1", expect=EXIT_CONFLICT)
    assert "someone else changed it" in stale.stderr


def test_edit_dry_run_checks_and_saves_nothing_then_the_edit_is_logged_as_the_named_user(
    cli, admin, api_client, sync_engine
):
    task = created(cli, "report")
    dry = json.loads(cli("schedules", "edit", "report", "--set", "jitter_seconds=30", "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["changes"] == {"jitter_seconds": [0, 30]} and dry["version"] == 2
    assert dry["schedule"] == "every 10 seconds"
    hourly = cli("schedules", "edit", "report", "--crontab", "0 * * * *", "--dry-run").stdout
    assert "schedule: every hour, on the hour" in hourly and "interval_id" in hourly and "crontab_id" in hourly
    assert len(dry["next_runs"]) == 5
    assert all(run["due_at"] >= run["scheduled_at"] for run in dry["next_runs"])
    refused = cli("schedules", "edit", "report", "--every", "0", "--dry-run", expect=EXIT_USAGE)
    assert "every" in refused.stderr
    after = api_client.get(f"{API}/{task['id']}", headers=admin.headers).json()
    assert after["version"] == 1 and after["jitter_seconds"] == 0
    assert changes_of(sync_engine, task["id"]) == [("create", None, None)]

    edited = json.loads(
        cli("schedules", "edit", "report", "--set", "jitter_seconds=30", "--as", admin.email, "--json").stdout
    )
    assert edited["version"] == 2 and edited["jitter_seconds"] == 30
    assert changes_of(sync_engine, task["id"])[-1] == ("update", admin.user_id, admin.email)
    from_api = api_client.get(f"{API}/{task['id']}/changes", headers=admin.headers).json()
    assert json.loads(cli("schedules", "changes", "report", "--json").stdout) == from_api


def count_rows(sync_engine, table: str) -> int:
    with sync_engine.connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()


def test_create_dry_run_checks_through_the_service_shows_the_planners_slots_and_saves_nothing(
    cli, admin, api_client, sync_engine
):
    options = ("--name", "berlin", "--task", "erp.ping", "--crontab", "30 2 * * *", "--timezone", "Europe/Berlin")
    dry = json.loads(cli("schedules", "create", *options, "--dry-run", "--json").stdout)
    assert set(dry) == {"dry_run", "fields", "schedule", "next_run_at", "next_runs"} and dry["dry_run"] is True
    assert dry["schedule"] == "every day at 02:30 Europe/Berlin"
    assert dry["fields"]["name"] == "berlin" and dry["fields"]["task"] == "erp.ping"
    assert len(dry["next_runs"]) == 5 and dry["next_run_at"] == dry["next_runs"][0]["scheduled_at"]
    words = cli("schedules", "create", *options, "--dry-run").stdout
    assert "dry run: nothing saved" in words and "schedule: every day at 02:30 Europe/Berlin" in words
    assert "next slots (UTC)" in words
    for table in ("periodic_tasks", "periodic_task_changes", "crontab_schedules"):
        assert count_rows(sync_engine, table) == 0, table

    # The slots are those the planner gives the saved task (the API's preview, `show`'s table).
    task = created(cli, *options[1:])
    preview = api_client.get(f"{API}/{task['id']}/preview", params={"count": 5}, headers=admin.headers).json()
    assert dry["next_runs"] == preview["runs"]
    # A name in use is refused as the API refuses it (409: exit 4), checked, not guessed.
    taken = cli("schedules", "create", *options, "--dry-run", expect=EXIT_CONFLICT)
    assert "already exists" in taken.stderr


@pytest.mark.parametrize(
    ("options", "api_body"),
    [
        (("--task", "erp.nope", "--every", "10"), {"task": "erp.nope", "schedule": EVERY_10}),
        (
            ("--task", "erp.ping", "--crontab", "99 * * * *"),
            {"task": "erp.ping", "schedule": {"kind": "crontab", "minute": "99"}},
        ),
        (
            ("--task", "erp.ping", "--every", "10", "--set", "jitter_seconds=-1"),
            {"task": "erp.ping", "schedule": EVERY_10, "jitter_seconds": -1},
        ),
        (("--task", "erp.ping"), {"task": "erp.ping"}),
    ],
    ids=["unregistered task", "crontab minute", "schema field", "no schedule"],
)
def test_create_dry_run_refuses_with_exit_2_and_the_apis_messages(
    cli, admin, api_client, sync_engine, options, api_body
):
    refused = cli("schedules", "create", "--name", "x", *options, "--dry-run", "--json", expect=EXIT_USAGE)
    from_api = api_client.post(API, json={"name": "x", **api_body}, headers=admin.headers)
    assert from_api.status_code == 422
    error = from_api.json()["error"]
    messages = [item["message"].removeprefix("Value error, ") for item in error["details"] or []] or [error["message"]]
    assert refused.stdout == ""
    assert all(message in refused.stderr for message in messages), (messages, refused.stderr)
    assert count_rows(sync_engine, "periodic_tasks") == 0 and count_rows(sync_engine, "periodic_task_changes") == 0


def test_as_must_name_an_active_superuser(cli, admin, make_user, sync_engine):
    created(cli, "report")
    member = make_user(role="member", organization="Acme")
    with sync_engine.connect() as connection:
        email = connection.execute(text("SELECT email FROM users WHERE id = :id"), {"id": member.user_id}).scalar()
    refused = cli("schedules", "pause", "report", "--note", "x", "--as", email, expect=EXIT_USAGE)
    assert "is not an active superuser" in refused.stderr
    cli("schedules", "pause", "report", "--note", "x", "--as", "nobody@example.com", expect=EXIT_NOT_FOUND)


def test_pause_and_resume_record_who_and_why(cli, admin, api_client, sync_engine, monkeypatch):
    task = created(cli, "report")
    paused = json.loads(cli("schedules", "pause", "report", "--note", "supplier API down", "--json").stdout)
    assert paused["paused_by"] == "command line" and paused["pause_note"] == "supplier API down"
    cli("schedules", "pause", "report", "--note", "", expect=EXIT_USAGE)
    resumed = json.loads(cli("schedules", "resume", "report", "--as", admin.email, "--json").stdout)
    assert resumed["paused_at"] is None
    assert changes_of(sync_engine, task["id"])[1:] == [("pause", None, None), ("resume", admin.user_id, admin.email)]
    table = cli("schedules", "changes", "report").stdout
    assert "pause" in table and "command line" in table and admin.email in table
    monkeypatch.setenv("ERP_CLI_AS", admin.email)  # --as for a whole shell session
    assert (
        json.loads(cli("schedules", "pause", "report", "--note", "again", "--json").stdout)["paused_by"] == admin.email
    )
    assert changes_of(sync_engine, task["id"])[-1] == ("pause", admin.user_id, admin.email)


def test_disable_and_delete_need_yes_without_a_terminal(cli, admin, api_client):
    task = created(cli, "report")
    refused = cli("schedules", "disable", "report", expect=EXIT_USAGE)
    assert "add --yes" in refused.stderr
    assert api_client.get(f"{API}/{task['id']}", headers=admin.headers).json()["enabled"] is True
    assert json.loads(cli("schedules", "disable", "report", "--yes", "--json").stdout)["enabled"] is False
    assert json.loads(cli("schedules", "enable", "report", "--json").stdout)["enabled"] is True
    cli("schedules", "delete", "report", expect=EXIT_USAGE)
    assert api_client.get(f"{API}/{task['id']}", headers=admin.headers).status_code == 200
    assert "deleted" in cli("schedules", "delete", "report", "--yes").stdout
    assert api_client.get(f"{API}/{task['id']}", headers=admin.headers).status_code == 404


def test_at_a_terminal_a_destructive_command_asks_first(cli, admin, api_client, monkeypatch):
    task = created(cli, "report")
    monkeypatch.setattr(common, "interactive", lambda: True)
    runner = CliRunner()
    declined = runner.invoke(app, ["schedules", "disable", "report"], input="n\n")
    assert declined.exit_code == EXIT_USAGE and "not confirmed: nothing changed" in declined.stderr
    assert "disable periodic task 'report'?" in declined.stdout
    assert api_client.get(f"{API}/{task['id']}", headers=admin.headers).json()["enabled"] is True
    accepted = runner.invoke(app, ["schedules", "delete", "report"], input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert api_client.get(f"{API}/{task['id']}", headers=admin.headers).status_code == 404


def test_backfill_dry_run_writes_nothing_and_the_backfill_plans_the_new_slots(cli, admin, sync_engine):
    task = created(cli, "report", "--crontab", "*/10 * * * *")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(minutes=30)
    window = ("--from", start.isoformat(), "--to", end.isoformat())
    dry = json.loads(cli("schedules", "backfill", "report", *window, "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["planned"] == len(dry["new_slots"]) >= 3 and dry["recorded_slots"] == []
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM periodic_task_runs")).scalar() == 0
    done = json.loads(cli("schedules", "backfill", "report", *window, "--json").stdout)
    assert done["planned"] == dry["planned"] and "dry_run" not in done
    again = json.loads(cli("schedules", "backfill", "report", *window, "--dry-run", "--json").stdout)
    assert again["planned"] == 0 and again["recorded_slots"] == dry["new_slots"]
    future = cli(
        "schedules", "backfill", "report", "--from", start.isoformat(), "--to", "2999-01-01T00:00:00Z", expect=2
    )
    assert "in the future" in future.stderr
    cli("schedules", "backfill", "report", "--from", "yesterday", "--to", end.isoformat(), expect=EXIT_USAGE)
    runs = json.loads(cli("runs", "list", "--schedule", str(task["id"]), "--json").stdout)
    assert {run["origin"] for run in runs["items"]} == {"backfill"} and len(runs["items"]) == dry["planned"]


def test_why_answers_as_the_api_does(cli, admin, api_client):
    task = created(cli, "report")
    before = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    answer = json.loads(cli("schedules", "why", "report", "--at", before.isoformat(), "--json").stdout)
    from_api = api_client.get(
        f"{API}/{task['id']}/runs/at", params={"time": before.isoformat()}, headers=admin.headers
    ).json()
    assert answer == from_api and "created_after" in answer["reasons"]
    assert "created_after" in cli("schedules", "why", "report", "--at", before.isoformat()).stdout


def test_runs_alerts_and_forecast_answer_the_apis_json(cli, admin, api_client, sync_engine):
    task = created(cli, "report", "--every", "1", "--period", "minutes")
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO periodic_task_alerts (kind, periodic_task_id, periodic_task_name, message, last_error)"
                " VALUES ('failure', :id, 'report', 'report failed: ValueError', 'HTTP 500')"
            ),
            {"id": task["id"]},
        )
    alerts = json.loads(cli("alerts", "list", "--json").stdout)
    assert alerts == api_client.get("/api/v1/admin/alerts", headers=admin.headers).json()
    assert alerts["items"][0]["message"] == "report failed: ValueError"
    assert "HTTP 500" in cli("alerts", "list", "--undelivered").stdout
    assert json.loads(cli("alerts", "list", "--delivered", "--json").stdout)["items"] == []
    cli("alerts", "list", "--kind", "nonsense", expect=EXIT_USAGE)

    assert (
        json.loads(cli("runs", "list", "--failed", "--json").stdout)
        == api_client.get("/api/v1/admin/runs", params={"failed": "true"}, headers=admin.headers).json()
    )
    cli("runs", "list", "--state", "exploded", expect=EXIT_USAGE)

    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    load = json.loads(cli("forecast", "--from", start.isoformat(), "--hours", "2", "--json").stdout)
    from_api = api_client.get(
        "/api/v1/admin/schedule-load",
        params={"from": start.isoformat(), "to": (start + timedelta(hours=2)).isoformat()},
        headers=admin.headers,
    ).json()
    assert load == from_api and load["total"] >= 119
    picture = cli("forecast", "--from", start.isoformat(), "--hours", "2").stdout
    assert start.strftime("%m-%d %H h") in picture and "busiest minutes" in picture
    assert "█" in picture  # every minute is as busy as the busiest: the darkest shade
    cli("forecast", "--hours", "25", expect=EXIT_USAGE)


def ledger_with_ties(sync_engine, slots: int = 7) -> list[int]:
    """Runs of two schedules at the same slots (the id breaks the tie) and, with microseconds,
    every ledger row's id, newest slot first as the runs pages order them."""
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO periodic_task_runs (periodic_task_id, periodic_task_name, task_name, scheduled_at,"
                " due_at, message_id, state) SELECT t, 'job ' || t, 'erp.ping', slot, slot, md5(t || '-' || g), 'succeeded'"
                " FROM generate_series(1, 2) t,"
                " generate_series(1, :slots) g, LATERAL (SELECT timestamptz '2030-01-01 00:00:00.123456+00'"
                " + g * interval '1 minute' AS slot) s"
            ),
            {"slots": slots},
        )
        return list(
            connection.execute(text("SELECT id FROM periodic_task_runs ORDER BY scheduled_at DESC, id DESC")).scalars()
        )


def test_runs_list_pages_by_key_with_next_before_as_the_api_does(cli, admin, api_client, sync_engine):
    every_id = ledger_with_ties(sync_engine)
    seen: list[int] = []
    before: list[str] = []
    while True:
        page = json.loads(cli("runs", "list", "--limit", "3", *before, "--json").stdout)
        from_api = api_client.get(
            "/api/v1/admin/runs", params={"limit": 3, "before": before[1:]}, headers=admin.headers
        ).json()
        assert page == from_api
        seen += [run["id"] for run in page["items"]]
        if page["next_before"] is None:
            assert not page["has_more"]
            break
        assert page["has_more"] and page["next_before"].endswith(f",{page['items'][-1]['id']}")
        assert "+" not in page["next_before"]  # it survives a query string unquoted
        before = ["--before", page["next_before"]]
    assert seen == every_id  # each row once, in order, across the ties between two schedules' slots

    first = json.loads(cli("runs", "list", "--limit", "4", "--json").stdout)
    table = cli("runs", "list", "--limit", "4").stdout
    assert f"more: --before {first['next_before']}" in table
    # The console's runs page writes its cursor with +00:00; that one is read too.
    console_cursor = first["next_before"].replace("Z,", "+00:00,")
    again = json.loads(cli("runs", "list", "--limit", "4", "--before", console_cursor, "--json").stdout)
    assert [run["id"] for run in again["items"]] == every_id[4:8]
    for wrong in ("yesterday", "2030-01-01T00:00:00,12", "2030-01-01T00:00:00Z,x"):
        refused = cli("runs", "list", "--before", wrong, expect=EXIT_USAGE)
        assert "is not a page's next_before" in refused.stderr
        answer = api_client.get("/api/v1/admin/runs", params={"before": wrong}, headers=admin.headers)
        assert answer.status_code == 422 and "is not a page's next_before" in answer.json()["error"]["message"]


def test_watch_prints_the_latest_runs_as_json_lines(cli, admin):
    created(cli, "report", "--crontab", "*/10 * * * *")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    window = ("--from", (end - timedelta(minutes=20)).isoformat(), "--to", end.isoformat())
    planned = json.loads(cli("schedules", "backfill", "report", *window, "--json").stdout)["planned"]
    lines = cli("runs", "watch", "--for", "0.5", "--interval", "0.2", "--json").stdout.splitlines()
    runs = [json.loads(line) for line in lines]
    assert len(runs) == planned and {run["state"] for run in runs} == {"planned"}
    assert [run["scheduled_at"] for run in runs] == sorted(run["scheduled_at"] for run in runs)  # oldest first
    table = cli("runs", "watch", "--for", "0.3", "--interval", "0.2").stdout.splitlines()
    assert table[0].startswith("run  schedule  slot (UTC)") and len(table) == 1 + planned
    assert all("report" in line and "planned" in line for line in table[1:])


def test_waiting_for_a_task_that_never_runs_times_out_with_5(cli, admin, redis_clean):
    """Before the module's worker starts (the next test): the run stays queued."""
    empty_broker()
    created(cli, "queued")
    sent = json.loads(cli("schedules", "run", "queued", "--json").stdout)
    waited = cli("tasks", "wait", sent["task_id"], "--timeout", "0.5", expect=EXIT_TIMEOUT)
    assert "still PENDING after 0.5 s" in waited.stderr
    empty_broker()


def test_run_now_waits_for_the_result_and_tasks_show_answers_as_the_api(
    cli, admin, api_client, in_process_worker, sync_engine
):
    empty_broker()
    task = created(cli, "ping now")
    finished = json.loads(cli("schedules", "run", "ping now", "--wait", "--timeout", "60", "--json").stdout)
    assert finished["state"] == "SUCCESS" and finished["periodic_task_id"] == task["id"]
    shown = json.loads(cli("tasks", "show", finished["task_id"], "--json").stdout)
    from_api = api_client.get(f"/api/v1/tasks/{finished['task_id']}", headers=admin.headers).json()
    assert shown == from_api
    assert "SUCCESS" in cli("tasks", "wait", finished["task_id"], "--timeout", "1").stdout
    assert changes_of(sync_engine, task["id"])[-1] == ("run", None, None)
    sent = json.loads(cli("schedules", "run", "ping now", "--json").stdout)
    assert sent["status_url"] == f"/api/v1/tasks/{sent['task_id']}"
    # A task dispatched through the API (its owner record in Redis, no ledger row) reads the same.
    accepted = api_client.post("/api/v1/tasks/ping", headers=admin.headers).json()
    waited = json.loads(cli("tasks", "wait", accepted["task_id"], "--timeout", "60", "--json").stdout)
    assert waited["state"] == "SUCCESS" and waited["created_at"] is not None and waited["periodic_task_id"] is None
    assert waited == api_client.get(accepted["status_url"], headers=admin.headers).json()
    cli("tasks", "show", "not-a-uuid", expect=EXIT_USAGE)
    cli("tasks", "show", "0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11", expect=EXIT_NOT_FOUND)


def test_create_token_prints_the_token_alone_on_stdout_and_a_login_link(cli, admin, sync_engine):
    result = cli("create-token", "--email", admin.email, "--base-url", "https://erp.example.com/")
    assert tokens.looks_like_token(result.stdout.strip())
    assert "https://erp.example.com/console/login/link?code=" in result.stderr
    both = json.loads(cli("create-token", "--email", admin.email, "--json").stdout)
    assert tokens.looks_like_token(both["token"])
    assert both["login_link"].startswith("http://127.0.0.1:8000/console/login/link?code=")
    no_link = cli("create-token", "--email", admin.email, "--no-login-link")
    assert "login" not in no_link.stderr
    link_only = cli("login-link", "--email", admin.email).stdout.strip()
    assert link_only.startswith("http://127.0.0.1:8000/console/login/link?code=")
    with sync_engine.connect() as connection:
        stored = connection.execute(text("SELECT code_hash FROM login_links")).scalars().all()
    code = link_only.rsplit("=", 1)[1]
    assert len(stored) == 3 and code not in stored and tokens.token_digest(code) in stored  # only digests
    missing = cli("create-token", "--email", "nobody@example.com", expect=EXIT_NOT_FOUND)
    assert missing.stderr.strip() == "erp: no user with email 'nobody@example.com'"


def test_doctor_lists_each_check_and_fails_without_beat_and_workers(cli, admin, redis_clean):
    result = cli("doctor", expect=EXIT_FAILED)
    lines = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}
    assert lines == {
        "settings": "OK",
        "postgresql": "OK",
        "migrations": "OK",
        "redis": "OK",
        "beat": "FAIL",
        "workers": "FAIL",
        "queues": "OK",
    }
    release = json.loads(cli("doctor", "--skip", "beat", "--skip", "workers", "--json").stdout)
    assert release["ok"] is True
    assert [(check["name"], check["status"]) for check in release["checks"]][4:6] == [
        ("beat", "skip"),
        ("workers", "skip"),
    ]
    cli("doctor", "--skip", "everything", expect=EXIT_USAGE)


def test_unknown_commands_and_options_are_usage_errors(cli):
    cli("schedules", "explode", expect=EXIT_USAGE)
    cli("schedules", "list", "--limit", "0", expect=EXIT_USAGE)
