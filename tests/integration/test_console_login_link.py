"""One-time login links to the console (made by `python -m erp create-token` and friends): the
link's page spends nothing, its button signs in as the login form does, once, before it expires,
and only with a code that was made."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from erp.accounts import service
from erp.core.db import run_with_session

LINK = "/console/login/link"


@pytest.fixture
def admin(clean_tables, make_user):
    return make_user(superuser=True)


def new_code(user_id: int) -> str:
    """A link as the command line makes it; its code."""
    url = run_with_session(lambda session: _link(user_id, session))
    assert url.startswith(f"http://127.0.0.1:8000{LINK}?code=")
    return parse_qs(urlsplit(url).query)["code"][0]


async def _link(user_id, session):
    return service.login_link_url(await service.create_login_link(user_id, session=session))


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def open_and_press(client, code: str):
    """Open the link's page, then press its button."""
    page = client.get(LINK, params={"code": code})
    assert page.status_code == 200, page.text
    return client.post(LINK, data={"csrf": form_token(page.text), "code": code}, follow_redirects=False)


def test_a_link_signs_in_once_with_the_login_forms_cookie(client, admin, sync_engine):
    code = new_code(admin.user_id)
    # Opening the page (a mail or chat preview does) spends nothing: it can be opened again.
    first_look = client.get(LINK, params={"code": code})
    assert first_look.status_code == 200 and "Sign in as user" in first_look.text
    response = open_and_press(client, code)
    assert response.status_code == 303 and response.headers["location"] == "/console"
    cookie = response.headers["set-cookie"]
    assert "erp_console_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/console" in cookie and code not in cookie
    assert client.get("/console", follow_redirects=False).status_code == 200  # signed in
    with sync_engine.connect() as connection:
        used = connection.execute(text("SELECT used_at IS NOT NULL FROM login_links")).scalar()
        session_token = connection.execute(
            text(
                "SELECT actor_user_id FROM account_changes WHERE action = 'token.create'"
                " AND changes->'name'->>1 = 'console session'"
            )
        ).scalar()
    assert used and session_token == admin.user_id  # the user signed in made their session

    client.cookies.clear()
    again = client.get(LINK, params={"code": code})
    assert again.status_code == 401 and "already been used" in again.text
    replayed = client.post(LINK, data={"csrf": form_token(again.text), "code": code}, follow_redirects=False)
    assert replayed.status_code == 401 and "already been used" in replayed.text
    assert "erp_console_session" not in replayed.headers.get("set-cookie", "")


def test_an_expired_link_is_refused(client, admin, sync_engine):
    code = new_code(admin.user_id)
    page = client.get(LINK, params={"code": code})
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE login_links SET expires_at = now() - interval '1 second'"))
    response = client.post(LINK, data={"csrf": form_token(page.text), "code": code}, follow_redirects=False)
    assert response.status_code == 401 and "has expired" in response.text
    assert "erp_console_session" not in response.headers.get("set-cookie", "")
    assert "has expired" in client.get(LINK, params={"code": code}).text


def test_a_wrong_code_is_refused(client, admin):
    new_code(admin.user_id)
    for code in ("", "x" * 43, "y" * 500):
        page = client.get(LINK, params={"code": code})
        assert page.status_code == 401 and "not valid" in page.text
    page = client.get("/console/login")
    forged = client.post(LINK, data={"csrf": form_token(page.text), "code": "x" * 43}, follow_redirects=False)
    assert forged.status_code == 401 and "not valid" in forged.text


def test_the_button_needs_the_pages_own_token(client, admin):
    code = new_code(admin.user_id)
    client.get(LINK, params={"code": code})
    forged = client.post(LINK, data={"csrf": "guessed", "code": code}, follow_redirects=False)
    assert forged.status_code == 403
    assert open_and_press(client, code).status_code == 303  # the link was not spent by the refusal


def test_a_deactivated_users_link_is_refused(client, admin, make_user, sync_engine):
    other = make_user(superuser=True)
    code = new_code(other.user_id)
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE users SET is_active = false WHERE id = :id"), {"id": other.user_id})
    assert "deactivated" in client.get(LINK, params={"code": code}).text


def test_the_demo_prints_a_link_that_signs_its_superuser_in(client, clean_tables):
    from erp import demo

    run_with_session(demo.create_demo)
    link = run_with_session(lambda session: demo.demo_login_link("http://localhost:5000", session))
    assert link.startswith(f"http://localhost:5000{LINK}?code=")
    page = client.get(LINK, params={"code": parse_qs(urlsplit(link).query)["code"][0]})
    assert demo.DEMO_EMAIL in page.text
    assert open_and_press(client, parse_qs(urlsplit(link).query)["code"][0]).status_code == 303
