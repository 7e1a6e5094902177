"""The browser tests' fixtures: one uvicorn and one Chromium per module, a fresh page per test.

Playwright's own browser builds are never downloaded: the tests run /usr/bin/chromium (scripts/test
installs Debian's package when it is missing), whose major version matches the pinned Playwright's.
"""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.support.processes import start_web

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def web(migrated_database, redis_clean):
    """One uvicorn for the module (each test empties the tables it uses)."""
    process, base_url = start_web()
    yield base_url
    process.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser_page(browser, clean_tables, tmp_path):
    """A page of its own browser context (no cookie from another test), watched for errors."""
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    # A script or style the Content-Security-Policy blocks shows up here: none may. A form the
    # server refuses (a page answered 422, with its messages) is logged too, and is no error.
    refused_pages: set[str] = set()
    page.on(
        "response",
        lambda response: (
            refused_pages.add(response.url)
            if response.status == 422 and response.request.resource_type == "document"
            else None
        ),
    )
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and message.location.get("url") not in refused_pages
            else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert errors == [], errors
