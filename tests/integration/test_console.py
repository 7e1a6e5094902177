"""The operator console over ASGI, against the real PostgreSQL: who may see and change what,
the forms' protection, changes in the change log, live regions and static files."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from markupsafe import escape

from erp.console import views
from erp.features.ping.tasks import ping
from tests.support.scheduling import empty_broker

API = "/api/v1/admin/periodic-tasks"


@pytest.fixture
def admin(clean_tables, make_user):
    return make_user(superuser=True)


def new_schedule(client, admin, **overrides):
    body = {"name": "nightly export", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}, **overrides}
    response = client.post(API, json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(client, user) -> str:
    """Sign in through the login form; returns the forms' token of the new session."""
    page = client.get("/console/login")
    assert page.status_code == 200
    response = client.post(
        "/console/login",
        data={"csrf": form_token(page.text), "token": user.token, "next": "/console/schedules"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/schedules"
    cookie = response.headers["set-cookie"]
    assert "erp_console_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/console" in cookie and user.token not in cookie  # a session token of its own
    return form_token(client.get("/console").text)


def test_pages_send_strangers_to_the_login_page(client, admin):
    response = client.get("/console/schedules?q=a", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fschedules%3Fq%3Da"
    assert client.get("/console/live/health", headers={"X-Console-Live": "1"}).status_code == 401
    form = client.post("/console/schedules/1/pause", data={"note": "x"}, follow_redirects=False)
    assert form.status_code == 303
    assert form.headers["location"] == "/console/login?next=%2Fconsole%2Fschedules%2F1"


def test_a_wrong_token_does_not_sign_in(client, admin):
    page = client.get("/console/login")
    response = client.post("/console/login", data={"csrf": form_token(page.text), "token": "erp_" + "x" * 40})
    assert response.status_code == 401
    assert "unknown token" in response.text
    assert "erp_console_session" not in response.headers.get("set-cookie", "")


def test_the_login_form_needs_its_own_token(client, admin):
    client.get("/console/login")
    response = client.post("/console/login", data={"csrf": "forged", "token": admin.token})
    assert response.status_code == 403
    assert "erp_console_session" not in response.headers.get("set-cookie", "")


def test_members_are_refused_as_the_api_refuses_them(client, admin, make_user):
    member = make_user(role="admin")
    sign_in(client, member)
    for path in ("/console/schedules", "/console/runs", "/console/live/health"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "only superusers may do this" in response.text
    # The landing page of a member is their organization's work (tests/integration/test_console_members.py).
    landing = client.get("/console", follow_redirects=False)
    assert landing.status_code == 303 and landing.headers["location"] == "/console/work"


def test_a_superuser_sees_every_page(client, admin):
    task = new_schedule(client, admin)
    new_schedule(
        client,
        admin,
        name="berlin",
        schedule={"kind": "crontab", "minute": "30", "hour": "2", "timezone": "Europe/Berlin"},
    )
    sign_in(client, admin)
    pages = ("/console", "/console/schedules", f"/console/schedules/{task['id']}", "/console/runs?state=failed")
    for path in (*pages, "/console/load", "/console/alerts?delivered=no"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert admin.token not in response.text
    listing = client.get("/console/schedules").text
    assert "every 10 seconds" in listing and "every day at 02:30 Europe/Berlin" in listing
    assert 'class="sparkline"' in listing
    detail = client.get(f"/console/schedules/{task['id']}").text
    assert "Next 10 runs" in detail and "create" in detail  # the preview and the change log
    assert client.get("/console/schedules/999999").status_code == 404
    load = client.get("/console/load").text
    assert 'class="heatmap"' in load and "Busiest minutes" in load


def test_output_is_escaped(client, admin):
    task = new_schedule(client, admin, name="<script>alert(1)</script>", description="<b>bold</b>")
    sign_in(client, admin)
    for path in ("/console/schedules", f"/console/schedules/{task['id']}"):
        html = client.get(path).text
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_forms_without_the_session_token_or_from_elsewhere_are_refused(client, admin):
    task = new_schedule(client, admin)
    csrf = sign_in(client, admin)
    url = f"/console/schedules/{task['id']}/pause"
    assert client.post(url, data={"note": "no token"}).status_code == 403
    assert client.post(url, data={"note": "forged", "csrf": "0" * 64}).status_code == 403
    other_site = client.post(url, data={"note": "x", "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403
    assert client.post(url, content=b"note=x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.get(f"{API}/{task['id']}", headers=admin.headers).json()["paused_at"] is None


def test_a_pause_from_the_console_is_in_the_change_log_with_its_note(client, admin):
    task = new_schedule(client, admin)
    csrf = sign_in(client, admin)
    url = f"/console/schedules/{task['id']}"
    refused = client.post(f"{url}/pause", data={"csrf": csrf, "note": ""})
    assert refused.status_code == 422 and "a pause needs a note" in refused.text
    response = client.post(f"{url}/pause", data={"csrf": csrf, "note": "supplier API down"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"{url}?done=paused"
    page = client.get(response.headers["location"]).text
    assert "supplier API down" in page and "Paused." in page
    changes = client.get(f"{API}/{task['id']}/changes", headers=admin.headers).json()
    assert changes[0]["action"] == "pause"
    assert changes[0]["actor_user_id"] == admin.user_id
    assert changes[0]["changes"]["pause_note"] == [None, "supplier API down"]
    again = client.post(f"{url}/pause", data={"csrf": csrf, "note": "twice"})
    assert again.status_code == 409 and "already paused" in again.text
    assert client.post(f"{url}/resume", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.post(f"{url}/disable", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.post(f"{url}/enable", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    actions = [change["action"] for change in client.get(f"{API}/{task['id']}/changes", headers=admin.headers).json()]
    assert actions == ["update", "update", "resume", "pause", "create"]
    version = client.get(f"{API}/{task['id']}", headers=admin.headers).json()["version"]
    stale = client.post(f"{url}/delete", data={"csrf": csrf, "version": str(version - 1)})
    assert stale.status_code == 409  # someone changed it since this page was rendered
    deleted = client.post(f"{url}/delete", data={"csrf": csrf, "version": str(version)}, follow_redirects=False)
    assert deleted.headers["location"] == "/console/schedules?done=deleted"
    assert "Deleted." in client.get(deleted.headers["location"]).text
    assert client.get(f"{API}/{task['id']}", headers=admin.headers).status_code == 404


def test_live_regions_answer_304_when_nothing_changed(client, admin):
    task = new_schedule(client, admin)
    csrf = sign_in(client, admin)
    url = f"/console/schedules/{task['id']}?region=status"
    first = client.get(url)
    assert first.status_code == 200 and "<html" not in first.text
    etag = first.headers["etag"]
    page = client.get(f"/console/schedules/{task['id']}").text
    assert f'data-etag="{escape(etag)}"' in page  # the page's own copy of the region has the same tag
    unchanged = client.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    client.post(f"/console/schedules/{task['id']}/pause", data={"csrf": csrf, "note": "maintenance"})
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and "maintenance" in changed.text


def test_schedules_are_paged_by_key(client, admin, monkeypatch):
    for number in range(5):
        new_schedule(client, admin, name=f"job {number}")
    monkeypatch.setattr(views, "SCHEDULES_PAGE", 2)
    sign_in(client, admin)
    names: list[str] = []
    path = "/console/schedules?q=job"
    while path:
        html = client.get(path).text
        names += re.findall(r'data-schedule="([^"]+)"', html)
        following = re.search(r'rel="next" href="([^"]+)"', html)
        path = following.group(1).replace("&amp;", "&") if following else ""
        assert "offset" not in path
    assert names == [f"job {number}" for number in range(5)]


def test_static_files_have_versioned_urls_and_long_caching(client):
    from erp.console.router import static_url

    response = client.get(static_url("console.js"))
    assert response.status_code == 200 and "max-age=31536000" in response.headers["cache-control"]
    assert response.headers["content-type"].startswith("text/javascript")
    assert client.get("/console/static/old/console.css").headers["cache-control"] == "no-cache"
    assert client.get(static_url("../router.py")).status_code == 404


def test_signing_out_revokes_the_session(client, admin):
    csrf = sign_in(client, admin)
    session_cookie = client.cookies.get("erp_console_session")
    assert client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set("erp_console_session", session_cookie, path="/console")  # kept by a thief
    assert client.get("/console", follow_redirects=False).status_code == 303
    tokens = client.get("/api/v1/me/tokens", headers=admin.headers).json()
    assert any(token["name"] == "console session" and token["revoked_at"] for token in tokens)


def record_runs(sync_engine, task, states, *, start, every=timedelta(minutes=1), **fields):
    """Occurrences of `task` in the ledger, one per state, `every` apart from `start`."""
    from sqlalchemy.orm import Session

    from erp.tasks.scheduler_models import PeriodicTaskRunDB

    with Session(sync_engine) as session, session.begin():
        for index, state in enumerate(states):
            slot = start + index * every
            session.add(
                PeriodicTaskRunDB(
                    periodic_task_id=task["id"],
                    periodic_task_name=task["name"],
                    task_name=task["task"],
                    scheduled_at=slot,
                    due_at=slot,
                    message_id=f"{task['id']}-{slot.isoformat()}",
                    state=state,
                    skip_reason="paused" if state == "skipped" else None,
                    started_at=slot + timedelta(seconds=2) if state in ("succeeded", "failed") else None,
                    finished_at=slot + timedelta(seconds=5) if state in ("succeeded", "failed") else None,
                    lateness_seconds=2.0 if state in ("succeeded", "failed") else None,
                    **fields,
                )
            )


def test_runs_are_filtered_and_paged_by_key(client, admin, sync_engine, monkeypatch):
    task = new_schedule(client, admin)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    record_runs(sync_engine, task, ["succeeded", "failed", "skipped", "succeeded", "failed"], start=start)
    monkeypatch.setattr(views, "RUNS_PAGE", 2)
    sign_in(client, admin)
    slots: list[str] = []
    path = "/console/runs"
    while path:
        html = client.get(path).text
        slots += re.findall(r'<tr>\s*<td><time datetime="([^"]+)"', html)
        following = re.search(r'rel="next" href="([^"]+)"', html)
        path = following.group(1).replace("&amp;", "&") if following else ""
    assert slots == sorted(slots, reverse=True) and len(slots) == 5
    failed = client.get("/console/runs?state=failed").text
    assert failed.count('class="state s-failed"') == 2 and "s-succeeded" not in failed
    paused = client.get("/console/runs?skip_reason=paused").text
    assert paused.count("skipped (paused)") == 1
    window = f"from={(start + timedelta(minutes=1)):%Y-%m-%dT%H:%M}&to={(start + timedelta(minutes=3)):%Y-%m-%dT%H:%M}"
    ranged = client.get(f"/console/runs?{window}").text
    assert len(re.findall(r'<tr>\s*<td><time datetime="', ranged)) == 2


def test_the_overview_shows_what_needs_attention(client, admin, sync_engine):
    from sqlalchemy import text

    failing = new_schedule(client, admin, name="flaky import")
    paused = new_schedule(client, admin, name="paused report")
    client.post(f"{API}/{paused['id']}/pause", json={"note": "month end freeze"}, headers=admin.headers)
    now = datetime.now(UTC)
    record_runs(sync_engine, failing, ["succeeded", "failed"], start=now - timedelta(minutes=30))
    with sync_engine.begin() as connection:
        connection.execute(
            text("UPDATE periodic_tasks SET consecutive_failures = 1 WHERE id = :id"), {"id": failing["id"]}
        )
        connection.execute(
            text(
                "INSERT INTO periodic_task_alerts (kind, periodic_task_id, periodic_task_name, message, last_error)"
                " VALUES ('failure', :id, 'flaky import', 'flaky import failed: ValueError', 'webhook: 500')"
            ),
            {"id": failing["id"]},
        )
    sign_in(client, admin)
    html = client.get("/console").text
    assert "flaky import" in html and "1 failed in a row" in html
    assert "month end freeze" in html
    assert "flaky import failed: ValueError" in html and "webhook: 500" in html
    assert "not delivered" in client.get("/console/alerts?delivered=no&kind=failure").text
    assert "No alert matches." in client.get("/console/alerts?delivered=yes").text
    assert 'class="activity"' in html and "1 succeeded" in html
    assert "Nothing needs attention" not in html
    health = client.get("/console/live/health").text
    assert "2 due · 2 sent" not in health  # the ledger rows above were never sent
    assert "Beat" in health and "Queues" in health
    assert "celery: 0 waiting" in health and "oldest" not in health


def test_the_health_strip_shows_the_age_of_the_oldest_message(client, admin, redis_clean):
    empty_broker()
    try:
        ping.apply_async(task_id=str(uuid.uuid4()))
        time.sleep(1.1)
        sign_in(client, admin)
        health = client.get("/console/live/health").text
        assert re.search(r"celery: 1 waiting, oldest [0-9.]+ s", health), health
    finally:
        empty_broker()


def test_the_next_runs_say_when_the_clocks_change(client, admin):
    task = new_schedule(
        client,
        admin,
        name="monthly",
        schedule={"kind": "crontab", "minute": "0", "hour": "12", "day_of_month": "1", "timezone": "Europe/Berlin"},
    )
    sign_in(client, admin)
    html = client.get(f"/console/schedules/{task['id']}").text
    assert "on day 1 of every month at 12:00 Europe/Berlin" in html
    # Any ten months in a row hold at least one of the two changes.
    assert re.search(
        r"clocks change before it: (CET \(UTC\+0100\) → CEST \(UTC\+0200\)|CEST \(UTC\+0200\) → CET \(UTC\+0100\))",
        html,
    )


def test_why_not_is_answered_on_the_schedule_page(client, admin):
    task = new_schedule(client, admin)
    sign_in(client, admin)
    html = client.get(f"/console/schedules/{task['id']}?at=2001-01-01T09:00").text
    assert "Why didn't it run" in html and 'class="answer"' in html
    bad = client.get(f"/console/schedules/{task['id']}?at=yesterday").text
    assert "is not a time" in bad


def post_form(client, url, pairs, **options):
    """A form with repeated fields, URL-encoded as a browser sends it."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return client.post(url, content=urlencode(pairs), headers=headers, **options)


def test_bulk_pause_and_resume_with_one_note(client, admin):
    tasks = [new_schedule(client, admin, name=f"bulk {number}") for number in range(3)]
    csrf = sign_in(client, admin)
    client.post(f"{API}/{tasks[2]['id']}/pause", json={"note": "already"}, headers=admin.headers)
    ids = [("id", str(task["id"])) for task in tasks]
    back = "/console/schedules?q=bulk"
    no_note = post_form(client, "/console/schedules/bulk", [("csrf", csrf), ("action", "pause"), *ids])
    assert no_note.status_code == 422
    response = post_form(
        client,
        "/console/schedules/bulk",
        [("csrf", csrf), ("action", "pause"), ("note", "quarter close"), ("back", back), *ids],
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{back}&done=bulk-pause&n=2&skipped=1"
    assert "Paused 2 schedules; 1 already paused or gone." in client.get(response.headers["location"]).text
    for task in tasks[:2]:
        change = client.get(f"{API}/{task['id']}/changes", headers=admin.headers).json()[0]
        assert change["action"] == "pause" and change["changes"]["pause_note"] == [None, "quarter close"]
    resumed = post_form(client, "/console/schedules/bulk", [("csrf", csrf), ("action", "resume"), *ids])
    assert resumed.status_code == 200 and "Resumed 3 schedules." in resumed.text
    assert post_form(client, "/console/schedules/bulk", [("action", "resume"), *ids]).status_code == 403


def test_a_new_schedule_is_previewed_and_created_with_the_api_rules(client, admin):
    csrf = sign_in(client, admin)
    assert client.get("/console/schedules/new").status_code == 200
    preview = client.get(
        "/console/schedules/new/preview?kind=crontab&minute=30&hour=2&timezone=Europe/Berlin",
        headers={"X-Console-Live": "1"},
    )
    assert preview.status_code == 200 and "every day at 02:30 Europe/Berlin" in preview.text
    assert preview.text.count("<li>") == 10
    assert "minute" in client.get("/console/schedules/new/preview?kind=crontab&minute=61").text
    assert "every 90 seconds" in client.get("/console/schedules/new/preview?kind=interval&every=90&period=seconds").text
    assert "Mars/Base" in client.get("/console/schedules/new/preview?kind=crontab&timezone=Mars/Base").text

    fields = {"csrf": csrf, "name": "quarter hours", "task": "erp.ping", "kind": "crontab", "minute": "*/15"}
    bad = client.post("/console/schedules/new", data={**fields, "minute": "61"})
    assert bad.status_code == 422 and "Not created: schedule: crontab minute &#39;61&#39; is not valid" in bad.text
    no_name = client.post("/console/schedules/new", data={**fields, "name": ""})
    assert no_name.status_code == 422 and 'id="name-error"' in no_name.text  # the message at its field
    unknown = client.post("/console/schedules/new", data={**fields, "task": "erp.no_such_task"})
    assert unknown.status_code == 422 and "is not registered" in unknown.text
    created = client.post("/console/schedules/new", data=fields, follow_redirects=False)
    assert created.status_code == 303 and created.headers["location"].endswith("?done=created")
    page = client.get(created.headers["location"]).text
    assert "Created." in page and "every 15 minutes" in page
    clash = client.post("/console/schedules/new", data=fields)
    assert clash.status_code == 409 and "already exists" in clash.text
    listing = client.get(f"{API}?name=quarter hours", headers=admin.headers).json()["items"]
    assert listing[0]["schedule"]["fields"]["minute"] == "*/15"
    change = client.get(f"{API}/{listing[0]['id']}/changes", headers=admin.headers).json()[0]
    assert change["action"] == "create" and change["actor_user_id"] == admin.user_id
    assert client.post("/console/schedules/new", data={**fields, "csrf": "x"}).status_code == 403


def test_the_session_cookie_is_secure_behind_an_https_router(client, admin):
    https = {"X-Forwarded-Proto": "https"}
    page = client.get("/console/login", headers=https)
    assert "Secure" in page.headers["set-cookie"]
    # The client speaks plain HTTP, so it keeps a Secure cookie to itself: sent here by hand.
    login_cookie = re.search(r"erp_console_login=([^;]+)", page.headers["set-cookie"]).group(1)
    client.cookies.clear()
    response = client.post(
        "/console/login",
        data={"csrf": form_token(page.text), "token": admin.token},
        headers={**https, "Cookie": f"erp_console_login={login_cookie}"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "erp_console_session=" in cookie and "Secure" in cookie and "Max-Age=43200" in cookie


def test_a_change_is_saved_at_the_version_shown_and_a_conflict_says_so(client, admin):
    task = new_schedule(client, admin, name="reports", schedule={"kind": "crontab", "minute": "0", "hour": "6"})
    csrf = sign_in(client, admin)
    form_page = client.get(f"/console/schedules/{task['id']}/edit").text
    assert 'value="reports"' in form_page and 'name="version" value="1"' in form_page
    fields = {"csrf": csrf, "version": "1", "name": "reports", "task": "erp.ping", "kind": "crontab"}
    fields |= {
        "minute": "0",
        "hour": "6",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "UTC",
    }
    unchanged = client.post(f"/console/schedules/{task['id']}/edit", data=fields, follow_redirects=False)
    assert unchanged.status_code == 303
    assert client.get(f"{API}/{task['id']}", headers=admin.headers).json()["version"] == 1  # nothing to change
    saved = client.post(
        f"/console/schedules/{task['id']}/edit",
        data={**fields, "hour": "7", "timezone": "Europe/Berlin"},
        follow_redirects=False,
    )
    assert saved.headers["location"] == f"/console/schedules/{task['id']}?done=saved"
    assert "every day at 07:00 Europe/Berlin" in client.get(saved.headers["location"]).text
    stale = client.post(f"/console/schedules/{task['id']}/edit", data={**fields, "name": "renamed"})
    assert stale.status_code == 409
    assert "someone else changed it" in stale.text and "Start again from version 2" in stale.text
    assert client.get(f"{API}/{task['id']}", headers=admin.headers).json()["name"] == "reports"
    change = client.get(f"{API}/{task['id']}/changes", headers=admin.headers).json()[0]
    assert change["action"] == "update" and change["actor_user_id"] == admin.user_id
    clocked = new_schedule(
        client, admin, name="once", schedule={"kind": "clocked", "clocked_time": "2031-05-01T09:00:00Z"}
    )
    clocked_form = client.get(f"/console/schedules/{clocked['id']}/edit")
    assert clocked_form.status_code == 200 and 'value="2031-05-01T09:00:00+00:00"' in clocked_form.text


def test_a_backfill_dry_run_lists_new_and_held_slots_then_plans_the_new_ones(client, admin, sync_engine):
    from sqlalchemy import text

    task = new_schedule(client, admin, name="hourly", schedule={"kind": "crontab", "minute": "0"})
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = hour - timedelta(hours=5), hour - timedelta(minutes=30)  # slots at -5h .. -1h: five
    record_runs(sync_engine, task, ["succeeded"], start=hour - timedelta(hours=3))
    csrf = sign_in(client, admin)
    url = f"/console/schedules/{task['id']}"
    dry = client.get(url, params={"backfill_from": f"{start:%Y-%m-%dT%H:%M}", "backfill_to": f"{end:%Y-%m-%dT%H:%M}"})
    assert "4 new occurrences would be planned; 1 the ledger already holds" in dry.text
    assert f'Already held: <time datetime="{(hour - timedelta(hours=3)).isoformat()}"' in dry.text
    with sync_engine.connect() as connection:
        count = "SELECT count(*) FROM periodic_task_runs WHERE periodic_task_id = :id"
        assert connection.execute(text(count), {"id": task["id"]}).scalar_one() == 1  # a dry run writes nothing
    future = client.get(url, params={"backfill_from": f"{hour:%Y-%m-%dT%H:%M}", "backfill_to": "2999-01-01T00:00"})
    assert "is in the future" in future.text
    done = client.post(
        f"{url}/backfill", data={"csrf": csrf, "from": start.isoformat(), "to": end.isoformat()}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == f"{url}?done=backfilled&n=4&skipped=1"
    assert "Backfill planned 4 occurrences; 1 the ledger already held" in client.get(done.headers["location"]).text
    with sync_engine.connect() as connection:
        origins = "SELECT origin, count(*) FROM periodic_task_runs WHERE periodic_task_id = :id GROUP BY origin"
        assert dict(connection.execute(text(origins), {"id": task["id"]}).all()) == {"backfill": 4, "schedule": 1}


def test_a_minute_of_the_load_heatmap_lists_its_schedules(client, admin):
    berlin = new_schedule(
        client,
        admin,
        name="berlin half past",
        schedule={"kind": "crontab", "minute": "30", "timezone": "Europe/Berlin"},
    )
    new_schedule(client, admin, name="quarter past", schedule={"kind": "crontab", "minute": "15"})
    sign_in(client, admin)
    load = client.get("/console/load").text
    links = re.findall(r'<a href="(/console/load\?minute=[^"]+)"', load)
    # 24 hours of two hourly schedules: 48 busy cells, each a link (the busiest table adds ten).
    half_past = sorted({link for link in links if ":30" in link})
    assert len(set(links)) == 48 and len(half_past) == 24
    minute = half_past[0].replace("&amp;", "&")
    page = client.get(minute)
    assert page.status_code == 200
    listed = page.text[page.text.index('id="minute"') :]
    assert "1 occurrence of 1 schedule" in listed
    assert f'href="/console/schedules/{berlin["id"]}">berlin half past' in listed
    assert "quarter past" not in listed
    api = client.get(
        "/api/v1/admin/schedule-load/minute",
        params={"at": minute.split("=")[1].split("#")[0] + ":00Z"},
        headers=admin.headers,
    ).json()
    assert [item["name"] for item in api["items"]] == ["berlin half past"]


def test_solar_and_clocked_schedules_with_every_field_are_previewed_and_saved(client, admin):
    csrf = sign_in(client, admin)
    solar = {"kind": "solar", "event": "sunrise", "latitude": "52.52", "longitude": "13.40"}
    preview = client.get(f"/console/schedules/new/preview?{urlencode({**solar, 'jitter_seconds': '30'})}").text
    assert "every day at sunrise (52.52° N, 13.40° E)" in preview and preview.count("<li>") == 10
    assert "up to 30 s after its slot" in preview
    assert "latitude" in client.get(f"/console/schedules/new/preview?{urlencode({**solar, 'latitude': '91'})}").text
    clocked = {"kind": "clocked", "clocked_time": "2031-05-01T09:00:00+02:00"}
    once = client.get(f"/console/schedules/new/preview?{urlencode(clocked)}").text
    assert "once, at 2031-05-01 07:00 UTC" in once and once.count("<li>") == 1 and "09:00:00 +02:00" in once
    naive = client.get(f"/console/schedules/new/preview?{urlencode({**clocked, 'clocked_time': '2031-05-01T09:00'})}")
    assert "needs a UTC offset" in naive.text
    bounded = {**solar, "start_time": "2031-01-01T00:00:00Z", "expires": "2031-01-03T23:00:00Z"}
    assert client.get(f"/console/schedules/new/preview?{urlencode(bounded)}").text.count("<li>") == 3

    fields = {"csrf": csrf, "name": "sunrise lights", "task": "erp.ping", **solar}
    fields |= {"args": "[]", "kwargs": '{"delay": 0}', "misfire_policy": "skip", "overlap_policy": "skip"}
    fields |= {"jitter_seconds": "30", "start_deadline_seconds": "600", "queue": "celery", "priority": "3"}
    for field, value, message in (
        ("kwargs", '{"delay": ', "not JSON"),
        ("jitter_seconds", "soon", "valid integer"),
        ("jitter_seconds", "90000", "less than or equal to 86400"),
        ("overlap_policy", "queue", "allow"),
        ("expires", "2031-01-01T00:00", "expires needs a UTC offset"),
        ("latitude", "north", "valid number"),
    ):
        refused = client.post("/console/schedules/new", data={**fields, field: value})
        assert refused.status_code == 422, (field, refused.text)
        assert f'id="{field}-error">' in refused.text and message in refused.text, field
    created = client.post("/console/schedules/new", data=fields, follow_redirects=False)
    assert created.status_code == 303, created.text
    task_id = int(created.headers["location"].split("/")[-1].split("?")[0])
    saved = client.get(f"{API}/{task_id}", headers=admin.headers).json()
    assert saved["schedule"]["kind"] == "solar" and saved["schedule"]["fields"]["latitude"] == 52.52
    assert saved["kwargs"] == {"delay": 0} and saved["misfire_policy"] == "skip" and saved["overlap_policy"] == "skip"
    assert (saved["jitter_seconds"], saved["start_deadline_seconds"], saved["queue"], saved["priority"]) == (
        30,
        600,
        "celery",
        3,
    )

    # The same form changes it: into a clocked one-off, a deadline cleared, at the version shown.
    assert f'href="/console/schedules/{task_id}/edit"' in client.get(f"/console/schedules/{task_id}").text
    form = client.get(f"/console/schedules/{task_id}/edit").text
    assert 'value="52.52"' in form and "{&#34;delay&#34;: 0}" in form
    change = {**fields, "version": "1", "kind": "clocked", "clocked_time": "2031-05-01T09:00:00Z"}
    change |= {"start_deadline_seconds": "", "one_off": "once"}
    response = client.post(f"/console/schedules/{task_id}/edit", data=change, follow_redirects=False)
    assert response.status_code == 303, response.text
    saved = client.get(f"{API}/{task_id}", headers=admin.headers).json()
    assert saved["schedule"]["kind"] == "clocked" and saved["start_deadline_seconds"] is None and saved["one_off"]
    assert saved["version"] == 2 and saved["kwargs"] == {"delay": 0}
    logged = client.get(f"{API}/{task_id}/changes", headers=admin.headers).json()[0]
    assert logged["changes"]["start_deadline_seconds"] == [600, None] and logged["changes"]["one_off"] == [False, True]
    # What the API refuses on a change is shown at its field: jitter may not be null.
    cleared = client.post(f"/console/schedules/{task_id}/edit", data={**change, "version": "2", "jitter_seconds": ""})
    assert cleared.status_code == 422 and "jitter_seconds: may not be null" in cleared.text


def test_a_schedules_last_run_is_the_newest_of_its_sparkline(client, admin, sync_engine):
    task = new_schedule(client, admin)
    start = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    record_runs(sync_engine, task, ["succeeded", "skipped", "failed"], start=start)
    sign_in(client, admin)
    row = client.get("/console/schedules").text
    row = row[row.index('data-schedule="nightly export"') :]
    row = row[: row.index("</tr>")]
    # The newest occurrence (failed, 3 s long, 2 s late), not the first recorded.
    assert re.search(r"failed.*3\.00 s.*late 2\.00 s", row, re.S), row
    assert "last 3 occurrences: 1 failed, 1 skipped, 1 succeeded" in row


def test_a_sparkline_draws_the_ledgers_newest_occurrences_at_the_right(client, admin, sync_engine):
    task = new_schedule(client, admin)
    start = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    states = ["succeeded", "failed", "skipped"] * 22  # 66 occurrences: the oldest 6 are not drawn
    # Recorded newest first, so the table's physical order is not the slots' order.
    for index in reversed(range(len(states))):
        record_runs(sync_engine, task, [states[index]], start=start + index * timedelta(minutes=1))
    sign_in(client, admin)
    row = client.get("/console/schedules").text
    row = row[row.index('data-schedule="nightly export"') :]
    row = row[: row.index("</tr>")]
    bars = re.findall(r'<rect class="bar s-(\w+)[^"]*" x="(\d+)"[^>]*><title>([^<]+) UTC: ', row)
    assert len(bars) == 60
    assert [int(x) for _, x, _ in bars] == sorted(int(x) for _, x, _ in bars)
    drawn = [(state, slot) for state, _, slot in bars]
    expected = [(states[index], f"{start + index * timedelta(minutes=1):%Y-%m-%d %H:%M:%S}") for index in range(6, 66)]
    assert drawn == expected
    # The last run is the newest occurrence (a skip: no duration).
    assert "last 60 occurrences: 20 failed, 20 skipped, 20 succeeded" in row


def test_the_schedules_page_counts_matches_up_to_a_bound(client, admin, monkeypatch):
    for number in range(3):
        new_schedule(client, admin, name=f"export {number}")
    sign_in(client, admin)
    assert "3 schedules match." in client.get("/console/schedules").text
    monkeypatch.setattr(views, "SCHEDULES_COUNTED", 2)
    assert "more than 2 schedules match." in client.get("/console/schedules").text
    assert "1 schedule matches." in client.get("/console/schedules?q=export 1").text
