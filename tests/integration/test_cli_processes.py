"""`python -m erp ...` as a separate process, as `heroku run` and `dokku run` start it: its exit
codes, its `--json` on stdout and its one-line errors on stderr, and `doctor` failing when a
service it needs is not there."""

from __future__ import annotations

import json
import socket

import pytest

from erp.core import tokens
from tests.support.cli import erp


def unused_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def superuser_token(clean_tables) -> str:
    done = erp("create-superuser", "--email", "ops@example.com", "--no-login-link")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_json_of_a_schedule_and_its_exit_codes(superuser_token):
    assert tokens.looks_like_token(superuser_token)
    made = erp("schedules", "create", "--name", "nightly", "--task", "erp.ping", "--crontab", "0 3 * * *", "--json")
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert task["name"] == "nightly" and task["version"] == 1 and task["schedule"]["kind"] == "crontab"
    page = json.loads(erp("schedules", "list", "--json").stdout)
    assert set(page) == {"items", "total", "limit", "offset"} and page["total"] == 1
    assert set(page["items"][0]) == set(task)

    missing = erp("schedules", "show", "987654")
    assert (missing.returncode, missing.stdout, missing.stderr) == (3, "", "erp: periodic task 987654 does not exist\n")
    clash = erp("schedules", "create", "--name", "nightly", "--task", "erp.ping", "--every", "5")
    assert clash.returncode == 4 and "already exists" in clash.stderr
    empty_note = erp("schedules", "pause", "nightly", "--note", "")
    assert empty_note.returncode == 2 and empty_note.stderr.startswith("erp: note:")
    not_confirmed = erp("schedules", "disable", "nightly")
    assert not_confirmed.returncode == 2 and "--yes" in not_confirmed.stderr
    usage = erp("schedules", "explode")
    assert usage.returncode == 2 and "No such command" in usage.stderr


def test_a_create_dry_run_exits_0_with_its_slots_or_2_with_the_apis_message_and_saves_nothing(superuser_token):
    options = ("schedules", "create", "--name", "nightly", "--task", "erp.ping", "--crontab", "0 3 * * *")
    dry = erp(*options, "--dry-run", "--json")
    assert (dry.returncode, dry.stderr) == (0, ""), dry.stderr
    preview = json.loads(dry.stdout)
    assert set(preview) == {"dry_run", "fields", "schedule", "next_run_at", "next_runs"}
    assert preview["schedule"] == "every day at 03:00 UTC" and len(preview["next_runs"]) == 5
    assert set(preview["next_runs"][0]) == {"scheduled_at", "due_at"}
    refused = erp("schedules", "create", "--name", "nightly", "--task", "erp.nope", "--every", "5", "--dry-run")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.startswith("erp: task 'erp.nope' is not registered")
    assert json.loads(erp("schedules", "list", "--json").stdout)["total"] == 0


def test_runs_list_json_carries_next_before_and_a_wrong_before_is_exit_2(superuser_token):
    page = json.loads(erp("runs", "list", "--json").stdout)
    assert set(page) == {"items", "limit", "offset", "has_more", "next_before"} and page["next_before"] is None
    wrong = erp("runs", "list", "--before", "page-2", "--json")
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr == "erp: before: 'page-2' is not a page's next_before (<slot>,<run id>)\n"


def test_doctor_fails_with_one_line_per_check_when_redis_is_not_there(clean_tables):
    port = unused_port()
    done = erp("doctor", "--skip", "beat", "--skip", "workers", REDIS_URL=f"redis://127.0.0.1:{port}")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["OK", "settings"],
        ["OK", "postgresql"],
        ["OK", "migrations"],
        ["FAIL", "redis"],
        ["SKIP", "beat"],
        ["SKIP", "workers"],
        ["SKIP", "queues"],
    ]
    assert f"127.0.0.1:{port}" in lines[3]
    healthy = erp("doctor", "--skip", "beat", "--skip", "workers", "--json")
    assert healthy.returncode == 0, healthy.stdout
    assert json.loads(healthy.stdout)["ok"] is True


def test_doctor_names_a_missing_setting_without_reaching_anything(clean_tables):
    done = erp("doctor", "--json", DATABASE_URL="")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["checks"][0]["status"] == "fail" and "DATABASE_URL" in report["checks"][0]["detail"]
    assert {check["status"] for check in report["checks"][1:]} == {"skip"}


def test_doctor_prints_no_password(clean_tables):
    port = unused_port()
    done = erp("doctor", REDIS_URL=f"redis://:hunter2-secret@127.0.0.1:{port}")
    assert done.returncode == 1
    assert "hunter2-secret" not in done.stdout + done.stderr


def test_a_database_that_does_not_answer_is_one_line_and_exit_1(clean_tables):
    port = unused_port()
    done = erp("schedules", "list", DATABASE_URL=f"postgresql://erp:s3cret-pw@127.0.0.1:{port}/erp")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("erp: ") and done.stderr.count("\n") == 1, done.stderr  # no traceback
    assert "s3cret-pw" not in done.stderr and "doctor" in done.stderr
