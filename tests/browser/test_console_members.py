"""The members' pages in a real browser: Debian's Chromium, driven by Playwright, against a real
uvicorn, a real prefork worker and the real PostgreSQL and Redis. A member signs in, lands on
their organization's work, asks for a report and watches it finish without a reload, downloads
it, uploads the sample CSV and sees its four failed rows, and downloads errors.csv; every page
passes axe, and the page fits a phone's width. (A refused form, 422 at its field, is the
integration tests': the browser reports every 4xx page as a console error, which the page
fixture counts.)
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from erp.core.celery_app import celery_app
from tests.browser.test_console import assert_accessible
from tests.support.orders import insert_orders
from tests.support.processes import start_worker
from tests.support.scheduling import empty_broker

pytestmark = pytest.mark.browser

SAMPLE = Path(__file__).parents[2] / "samples" / "sales_orders.csv"


@pytest.fixture
def worker(web):
    empty_broker()
    # Users' ids start again after each test's TRUNCATE: an earlier test's task list of the same
    # id (in the result backend) must not show up as this member's.
    celery_app.backend.client.flushdb()
    process = start_worker("--concurrency", "1")
    yield process
    process.stop()


def test_a_member_requests_a_report_downloads_it_and_imports_the_sample_csv(
    web, worker, browser_page: Page, make_user, sync_engine, tmp_path: Path
):
    member = make_user(role="member", organization="Acme")
    insert_orders(sync_engine, member.organization_id, 120, first_day=date(2026, 10, 1), days=61, customers=4)
    page = browser_page
    work_url = f"{web}/console/work/{member.organization_id}"

    page.goto(f"{web}/console/login")
    page.get_by_label("API token").fill(member.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(work_url)  # a member's landing page
    expect(page.get_by_role("heading", name="Work of Acme")).to_be_visible()
    expect(page.get_by_role("link", name="Schedules")).to_have_count(0)
    assert_accessible(page)

    page.get_by_label("From (order date)").fill("2026-10-01")
    page.get_by_label("To (order date, included)").fill("2026-11-30")
    page.get_by_label("Group by").select_option("customer")
    page.get_by_role("button", name="Request report").click()
    expect(page.get_by_role("status")).to_contain_text("Report requested.")
    page.evaluate("window.stillTheSamePage = true")
    tasks = page.locator("#tasks")
    expect(tasks.locator("tr[data-task]")).to_have_count(1)
    download_link = tasks.get_by_role("link", name="Download")
    expect(download_link).to_be_visible(timeout=30_000)  # the live region shows it done
    expect(tasks.locator(".state").first).to_have_text("success")
    assert page.evaluate("window.stillTheSamePage") is True
    page.screenshot(path=str(tmp_path / "work-report.png"), full_page=True)
    with page.expect_download() as arrived:
        download_link.click()
    report = arrived.value
    assert report.suggested_filename == "sales-2026-10-01-to-2026-11-30-by-customer.csv"
    rows = list(csv.reader(io.StringIO(Path(report.path()).read_text(encoding="utf-8-sig"))))
    assert {row[0] for row in rows[1:5]} == {f"Customer {number}" for number in range(4)}

    page.get_by_label("CSV file").set_input_files(str(SAMPLE))
    page.get_by_role("button", name="Upload and import").click()
    expect(page.get_by_role("heading", name="sales_orders.csv")).to_be_visible()
    status = page.locator("#import")
    expect(status.locator(".state")).to_have_text("done", timeout=30_000)
    expect(status.locator("table.errors tbody tr")).to_have_count(4)
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "work-import.png"), full_page=True)
    with page.expect_download() as arrived:
        page.get_by_role("link", name="Download errors.csv").click()
    errors = list(csv.reader(io.StringIO(Path(arrived.value.path()).read_text())))
    assert errors[0] == ["line_number", "reason"] and len(errors) == 5

    page.get_by_role("link", name="Work").first.click()
    imports = page.locator("#imports")
    expect(imports.locator("tr[data-import]")).to_have_count(1)
    expect(imports).to_contain_text("4 failed")
    expect(page.locator("#tasks tr[data-task]")).to_have_count(2)
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "work.png"), full_page=True)

    # At a phone's width nothing is wider than the screen but the tables, which scroll.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(work_url)
    expect(page.get_by_role("button", name="Request report")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page)
    page.screenshot(path=str(tmp_path / "work-phone.png"), full_page=True)


def test_a_superuser_sees_the_schedules_and_can_open_a_members_page(web, browser_page: Page, make_user):
    member = make_user(role="member", organization="Globex")
    admin = make_user(superuser=True, role=None)
    page = browser_page
    page.goto(f"{web}/console/login")
    page.get_by_label("API token").fill(admin.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("link", name="Work").click()
    page.get_by_label("Organization id").fill(str(member.organization_id))
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("heading", name="Work of Globex")).to_be_visible()
    expect(page.get_by_role("link", name="Schedules")).to_be_visible()
    assert_accessible(page)
