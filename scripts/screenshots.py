"""The console's screenshots in the README (docs/console/*.png), made from the real pages.

A real uvicorn, beat and worker run on a database of their own (the benchmarks', recreated:
BENCH_DATABASE_URL, Redis databases BENCH_REDIS_BROKER_DB and BENCH_REDIS_RESULT_DB). The
demo's superuser and schedule (erp.demo) are made first, then a few schedules of each kind
through the API (so the change log is real), one paused with a note; the last day of their
occurrences is written to the ledger as beat and the workers would have written it (a fixed
random seed: the same picture every run), with a schedule failing at its last three runs.
Then Debian's chromium (Playwright, `executable_path`; no browser is downloaded) signs in
with the demo's token and saves each page at 1280x800.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg2.extras
from playwright.sync_api import Page, expect, sync_playwright

from scripts.benchmarks.beat import connect, recreate_database
from scripts.benchmarks.common import use_benchmark_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "docs" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
API = "/api/v1/admin/periodic-tasks"
SCHEDULES: list[dict[str, Any]] = [
    {
        "name": "nightly sales report",
        "schedule": {"kind": "crontab", "minute": "30", "hour": "2", "timezone": "Europe/Berlin"},
    },
    {
        "name": "invoice reminders",
        "schedule": {
            "kind": "crontab",
            "minute": "0",
            "hour": "9",
            "day_of_week": "mon-fri",
            "timezone": "Europe/Berlin",
        },
        "finish_deadline_seconds": 600,
    },
    {
        "name": "exchange rates",
        "schedule": {"kind": "interval", "every": 15, "period": "minutes"},
        "jitter_seconds": 60,
    },
    {"name": "ledger export", "schedule": {"kind": "crontab", "minute": "*/10"}, "auto_pause_after_failures": 5},
    {"name": "supplier feed import", "schedule": {"kind": "interval", "every": 5, "period": "minutes"}},
    {
        "name": "warehouse lights",
        "schedule": {"kind": "solar", "event": "sunset", "latitude": 52.52, "longitude": 13.4},
        "kwargs": {"zone": "yard"},
    },
    {"name": "year-end close", "schedule": {"kind": "clocked", "clocked_time": "2027-01-01T00:05:00+01:00"}},
]
# The ledger's history: how often each of these ran over the last day.
HISTORY_STEPS = {
    "exchange rates": timedelta(minutes=15),
    "ledger export": timedelta(minutes=10),
    "supplier feed import": timedelta(minutes=5),
    "demo: ping every 30 seconds": timedelta(minutes=2),
}


def seed_history(tasks: dict[str, int], now: datetime) -> None:
    """The last day of occurrences, as beat and the workers write them."""
    rand = random.Random(18)
    rows: list[tuple[Any, ...]] = []
    paused_since = now - timedelta(hours=3)
    for name, step in HISTORY_STEPS.items():
        slot = now.replace(second=0, microsecond=0) - timedelta(hours=24)
        while slot < now - step:
            state, reason, error = "succeeded", None, None
            if name == "supplier feed import" and slot >= paused_since:
                state, reason = "skipped", "paused"
            elif name == "ledger export" and slot >= now - 3 * step - step:
                state, error = "failed", ("ConnectionError", "the file server did not answer")
            elif rand.random() < 0.03:
                state, error = "failed", ("TimeoutError", "the supplier did not answer within 30 s")
            elif rand.random() < 0.02:
                state, reason = "skipped", "overlap"
            late = rand.choice([0.05, 0.1, 0.2, 0.4, 1.5]) if state != "skipped" else None
            started = None if late is None else slot + timedelta(seconds=late)
            finished = None if started is None else started + timedelta(seconds=rand.uniform(0.2, 40))
            rows.append(
                (
                    tasks[name],
                    name,
                    "erp.ping",
                    slot,
                    slot,
                    f"seed-{tasks[name]}-{slot.timestamp():.0f}",
                    state,
                    reason,
                    None if state == "skipped" else slot,
                    started,
                    finished,
                    late,
                    error[0] if error else None,
                    error[1] if error else None,
                )
            )
            slot += step
    connection = connect()
    try:
        with connection, connection.cursor() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO periodic_task_runs (periodic_task_id, periodic_task_name, task_name, scheduled_at, due_at,"
                " message_id, state, skip_reason, sent_at, started_at, finished_at, lateness_seconds, error_type,"
                " error_message) VALUES %s",
                rows,
                page_size=2000,
            )
            cursor.execute(
                "UPDATE periodic_tasks SET consecutive_failures = 3 WHERE id = %s", (tasks["ledger export"],)
            )
            # The runs sent, as beat counts them while it sends them (a schedule page shows it).
            cursor.execute(
                "UPDATE periodic_tasks SET total_run_count = sent.runs FROM ("
                " SELECT periodic_task_id, count(sent_at) AS runs FROM periodic_task_runs GROUP BY periodic_task_id"
                ") AS sent WHERE periodic_tasks.id = sent.periodic_task_id"
            )
    finally:
        connection.close()


def create_schedules(api: httpx.Client) -> dict[str, int]:
    tasks = {task["name"]: task["id"] for task in api.get(API).json()["items"]}
    for body in SCHEDULES:
        response = api.post(API, json={"task": "erp.ping", **body})
        response.raise_for_status()
        tasks[body["name"]] = response.json()["id"]
    api.post(f"{API}/{tasks['supplier feed import']}/pause", json={"note": "supplier API down until Monday"})
    return tasks


def shoot(page: Page, name: str) -> None:
    expect(page.locator(".health")).to_contain_text("Beat")  # the strip, read after the page
    page.wait_for_timeout(300)
    page.screenshot(path=str(OUTPUT / f"{name}.png"))
    print(f"docs/console/{name}.png")


def take(base_url: str, token: str, tasks: dict[str, int]) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(
            viewport=VIEWPORT, color_scheme="light", locale="en-GB", timezone_id="Europe/Berlin"
        )
        page = context.new_page()
        page.goto(f"{base_url}/console/login")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        shoot(page, "overview")
        page.goto(f"{base_url}/console/schedules")
        shoot(page, "schedules")
        page.goto(f"{base_url}/console/schedules/{tasks['ledger export']}?at=2026-01-01T09:00")
        shoot(page, "schedule")
        page.goto(f"{base_url}/console/schedules/new")
        page.get_by_label("Name", exact=True).fill("warehouse lights, east")
        page.locator("select[name=task]").select_option("erp.ping")
        page.get_by_label("Kind").select_option("crontab")
        page.get_by_label("Minute", exact=True).fill("30")
        page.get_by_label("Hour", exact=True).fill("2")
        page.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
        expect(page.locator("#preview")).to_contain_text("every day at 02:30 Europe/Berlin")
        shoot(page, "edit")
        page.goto(f"{base_url}/console/load")
        busiest = page.locator("table a").first.get_attribute("href") or ""
        page.goto(f"{base_url}{busiest.split('#')[0]}")  # at the top: the heatmap, then the minute's list
        expect(page.locator("#minute")).to_be_visible()
        shoot(page, "load")
        browser.close()


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    # Stopped by a signal (Ctrl-C, `timeout`, a CI job cancelled), the uvicorn, worker and beat
    # it started are stopped too: SIGTERM unwinds through `finally` as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    use_benchmark_environment()
    from erp.core.db import run_with_session
    from erp.demo import create_demo
    from tests.support.processes import start_beat, start_web, start_worker

    recreate_database()
    token = run_with_session(create_demo)
    web, base_url = start_web()
    beat = worker = None
    try:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            tasks = create_schedules(api)
        seed_history(tasks, datetime.now(UTC))
        # Their start-up lines are what start_worker and start_beat wait for (INFO).
        worker = start_worker("--concurrency", "1", env={"LOG_LEVEL": "INFO"})
        beat = start_beat(env={"LOG_LEVEL": "INFO"})
        take(base_url, token, tasks)
    finally:
        for process in (beat, worker, web):
            if process is not None:
                process.stop()


if __name__ == "__main__":
    main()
