"""The console in a real browser: Debian's Chromium, driven by Playwright, against a real uvicorn
and the real PostgreSQL and Redis. Sign in, find a schedule, pause it with a note, and watch a
live region change without a reload when the schedule is resumed elsewhere.

Playwright's own browser builds are never downloaded: the test runs /usr/bin/chromium (scripts/test
installs Debian's package when it is missing), whose major version matches the pinned Playwright's.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect
from sqlalchemy import text

from tests.support.cli import erp
from tests.support.processes import start_worker
from tests.support.scheduling import empty_broker

pytestmark = pytest.mark.browser

API = "/api/v1/admin/periodic-tasks"
AXE = Axe()


def sign_in(page: Page, web: str, token: str) -> None:
    page.goto(f"{web}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def assert_accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation on the page as it stands."""
    violations = [
        f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']][:3]}"
        for violation in AXE.run(page).response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
    assert violations == [], f"{page.url}: {violations}"


def test_sign_in_pause_with_a_note_and_watch_the_status_change(web, browser_page: Page, make_user, tmp_path: Path):
    admin = make_user(superuser=True)
    api = httpx.Client(base_url=web, headers=admin.headers, timeout=10)
    task = api.post(
        API,
        json={
            "name": "nightly export",
            "task": "erp.ping",
            "schedule": {"kind": "crontab", "minute": "30", "hour": "2", "timezone": "Europe/Berlin"},
        },
    ).json()
    page = browser_page

    page.goto(f"{web}/console/schedules")
    expect(page).to_have_url(f"{web}/console/login?next=%2Fconsole%2Fschedules")
    assert_accessible(page)
    page.get_by_label("API token").fill(admin.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{web}/console/schedules")
    row = page.locator('tr[data-schedule="nightly export"]')
    expect(row).to_contain_text("every day at 02:30 Europe/Berlin")
    expect(page.locator(".health")).to_contain_text("Beat")
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)

    row.get_by_role("link", name="nightly export").click()
    expect(page.get_by_role("heading", name="nightly export")).to_be_visible()
    page.get_by_label("Why pause it?").fill("supplier API down until Monday")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Paused.")
    status = page.locator("#status")
    expect(status).to_contain_text("supplier API down until Monday")
    expect(page.locator("table.changes")).to_contain_text("pause")
    changes = api.get(f"{API}/{task['id']}/changes").json()
    assert changes[0]["action"] == "pause" and changes[0]["actor_user_id"] == admin.user_id

    # The status region asks again while the tab is visible; unchanged, it is answered 304.
    statuses: list[int] = []
    page.on("response", lambda response: statuses.append(response.status) if "region=status" in response.url else None)
    page.evaluate("window.stillTheSamePage = true")
    with page.expect_response(
        lambda response: "region=status" in response.url and response.status == 304, timeout=15_000
    ):
        pass  # the region polls every 5 s: its next question is answered "not modified"
    # Resumed elsewhere (the API): the region shows it without a reload.
    assert api.post(f"{API}/{task['id']}/resume").status_code == 200
    expect(status.locator(".status")).to_have_text("active", timeout=12_000)
    expect(status).not_to_contain_text("supplier API down")
    assert page.evaluate("window.stillTheSamePage") is True
    assert 200 in statuses
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "schedule.png"), full_page=True)

    for path in ("/console", "/console/runs?state=failed", "/console/load", "/console/alerts"):
        page.goto(f"{web}{path}")
        expect(page.locator(".health")).to_contain_text("Workers")
        assert_accessible(page)
    page.keyboard.press("g")
    page.keyboard.press("s")  # "g s": the schedules
    expect(page).to_have_url(f"{web}/console/schedules")

    # A new crontab schedule: the preview follows the fields as they are typed.
    page.get_by_role("link", name="New schedule").click()
    page.get_by_label("Name", exact=True).fill("quarter hours")
    page.locator("select[name=task]").select_option("erp.ping")
    expect(page.get_by_label("Every", exact=True)).to_be_hidden()  # the interval's fields, for a crontab
    page.get_by_label("Minute", exact=True).fill("61")
    expect(page.locator("#preview")).to_contain_text("minute")
    page.get_by_label("Minute", exact=True).fill("*/15")
    page.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    expect(page.locator("#preview")).to_contain_text("every 15 minutes")
    expect(page.locator("#preview li")).to_have_count(10)
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "new.png"), full_page=True)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_contain_text("Created.")
    expect(page.get_by_role("heading", name="quarter hours")).to_be_visible()
    page.screenshot(path=str(tmp_path / "created.png"), full_page=True)
    # At a phone's width nothing is wider than the screen but the tables, which scroll.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{web}/console/schedules")
    expect(page.locator('tr[data-schedule="nightly export"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    api.close()


def test_run_now_and_watch_the_result_arrive(web, browser_page: Page, make_user, tmp_path: Path):
    """A real worker runs what "Run now" sent; the runs region shows it succeed without a reload."""
    empty_broker()
    worker = start_worker("--concurrency", "1")
    try:
        admin = make_user(superuser=True)
        with httpx.Client(base_url=web, headers=admin.headers, timeout=10) as api:
            task = api.post(
                API,
                json={
                    "name": "ping hourly",
                    "task": "erp.ping",
                    "schedule": {"kind": "interval", "every": 1, "period": "hours"},
                },
            ).json()
        page = browser_page
        sign_in(page, web, admin.token)
        expect(page.locator(".health")).to_contain_text("1 answering", timeout=15_000)  # the worker's heartbeat
        page.goto(f"{web}/console/schedules/{task['id']}")
        expect(page.get_by_text("No occurrence in the run ledger yet.")).to_be_visible()
        page.get_by_role("button", name="Run now").click()
        expect(page.get_by_role("status")).to_contain_text("Sent one run now")
        runs = page.locator("table.runs")
        expect(runs.locator(".state").first).to_have_text(re.compile(r"sent|started|succeeded"))
        page.evaluate("window.stillTheSamePage = true")
        expect(runs.locator(".state").first).to_have_text("succeeded", timeout=20_000)
        expect(runs).to_contain_text("manual")
        assert page.evaluate("window.stillTheSamePage") is True
        page.screenshot(path=str(tmp_path / "run-now.png"), full_page=True)
    finally:
        worker.stop()


def test_sign_in_with_the_one_time_link_the_command_line_prints(web, browser_page: Page, make_user, sync_engine):
    user = make_user(superuser=True)
    with sync_engine.connect() as connection:
        email = connection.execute(text("SELECT email FROM users WHERE id = :id"), {"id": user.user_id}).scalar()
    printed = erp("login-link", "--email", email, "--base-url", web)
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    browser_page.goto(link)
    assert_accessible(browser_page)
    browser_page.get_by_role("button", name=f"Sign in as {email}").click()
    expect(browser_page.get_by_role("heading", name="Overview")).to_be_visible()
    # Spent: opened again, it signs no one in (a 401, which the page fixture would count as an error).
    again = httpx.get(link, timeout=10)
    assert again.status_code == 401 and "already been used" in again.text


def test_solar_and_clocked_schedules_are_previewed_and_why_not_is_answered(
    web, browser_page: Page, make_user, tmp_path: Path
):
    admin = make_user(superuser=True)
    page = browser_page
    sign_in(page, web, admin.token)

    # A solar schedule: its fields appear with the kind, the preview follows them.
    page.goto(f"{web}/console/schedules/new")
    page.get_by_label("Name", exact=True).fill("lights at sunset")
    page.locator("select[name=task]").select_option("erp.ping")
    page.get_by_label("Kind").select_option("solar")
    expect(page.get_by_label("Minute", exact=True)).to_be_hidden()
    page.get_by_label("Event").select_option("sunset")
    page.get_by_label("Latitude").fill("95")
    expect(page.locator("#preview")).to_contain_text("latitude")
    page.get_by_label("Latitude").fill("52.52")
    page.get_by_label("Longitude").fill("13.40")
    expect(page.locator("#preview")).to_contain_text("every day at sunset (52.52° N, 13.40° E)")
    expect(page.locator("#preview li")).to_have_count(10)
    page.get_by_label("Jitter (s)").fill("120")
    expect(page.locator("#preview")).to_contain_text("up to 120 s after its slot")
    page.get_by_label("Keyword arguments").fill('{"lights": ')  # not JSON: refused at its field
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#kwargs-error")).to_contain_text("not JSON")
    page.get_by_label("Keyword arguments").fill('{"lights": "garden"}')
    page.get_by_label("While the previous run runs").select_option("skip")
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "new-solar.png"), full_page=True)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_contain_text("Created.")
    expect(page.get_by_role("heading", name="lights at sunset")).to_be_visible()
    expect(page.locator("body")).to_contain_text("every day at sunset")

    # "Why didn't it run at T?", answered in place from the ledger.
    page.get_by_label("Time (UTC, or with an offset)").fill("2026-01-01T18:00")
    page.get_by_role("button", name="Ask the ledger").click()
    expect(page.locator(".answer")).to_contain_text("after this time")
    expect(page.get_by_label("Time (UTC, or with an offset)")).to_have_value("2026-01-01T18:00")
    assert_accessible(page)

    # A clocked one: one run, at its moment, shown in the offset it was given in.
    page.goto(f"{web}/console/schedules/new")
    page.get_by_label("Name", exact=True).fill("go live")
    page.locator("select[name=task]").select_option("erp.ping")
    page.get_by_label("Kind").select_option("clocked")
    page.get_by_label("At (with its UTC offset)").fill("2031-05-01T09:00")
    expect(page.locator("#preview")).to_contain_text("needs a UTC offset")
    page.get_by_label("At (with its UTC offset)").fill("2031-05-01T09:00:00+02:00")
    expect(page.locator("#preview")).to_contain_text("once, at 2031-05-01 07:00 UTC")
    expect(page.locator("#preview li")).to_have_count(1)
    expect(page.locator("#preview li")).to_contain_text("09:00:00 +02:00")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_contain_text("Created.")
    expect(page.get_by_role("heading", name="go live")).to_be_visible()
    page.screenshot(path=str(tmp_path / "clocked.png"), full_page=True)
