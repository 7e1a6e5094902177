"""The operator console over ASGI, against the real PostgreSQL: who may see and change what,
the forms' protection, changes in the change log, live regions and static files."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from erp.tasks.console import views

API = "/api/v1/admin/periodic-tasks"


@pytest.fixture
def client(api_client):
    """The suite's client with no console cookie before or after (it is shared by the run)."""
    api_client.cookies.clear()
    yield api_client
    api_client.cookies.clear()


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
    assert client.post("/console/schedules/1/pause", data={"note": "x"}).status_code == 401


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
    for path in ("/console", "/console/schedules", "/console/runs", "/console/live/health"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "only superusers may do this" in response.text


def test_a_superuser_sees_every_page(client, admin):
    task = new_schedule(client, admin)
    new_schedule(
        client,
        admin,
        name="berlin",
        schedule={"kind": "crontab", "minute": "30", "hour": "2", "timezone": "Europe/Berlin"},
    )
    sign_in(client, admin)
    for path in ("/console", "/console/schedules", f"/console/schedules/{task['id']}", "/console/runs?state=failed"):
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
    from erp.tasks.console.router import static_url

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
