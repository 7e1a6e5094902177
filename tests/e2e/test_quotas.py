"""The quotas with real processes: two uvicorns share one rate limit through Redis; one
organization flooding a real worker with reports cannot hold another organization's report up
for longer than its running limit allows; a worker killed mid-report gives its slot back.

One worker process (concurrency 1), so the queue is the only thing the two organizations share
and the order of the queue decides who waits.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
import redis
from sqlalchemy import text

from erp.core import concurrency_slots
from erp.core.config import get_settings
from tests.support.processes import start_web, start_worker
from tests.support.scheduling import empty_broker

pytestmark = pytest.mark.e2e

PER_USER_PER_MINUTE = 30
REPORTS_RUNNING = 2
LEASE_SECONDS = 3
ENV = {
    "TASKS_PER_MINUTE_PER_USER": str(PER_USER_PER_MINUTE),
    "TASKS_PER_MINUTE_PER_ORGANIZATION": "100000",
    "REPORT_MAX_RUNNING_PER_ORGANIZATION": str(REPORTS_RUNNING),
    "TASK_SLOT_LEASE_SECONDS": str(LEASE_SECONDS),
    "CELERY_WORKER_CONCURRENCY": "1",
}
# The flooding organization's report: 100,000 orders of 20,000 customers, by customer, as XLSX.
HEAVY_REPORT = {"date_from": "2026-01-01", "date_to": "2026-12-31", "group_by": "customer", "format": "xlsx"}
LIGHT_REPORT = {"date_from": "2026-01-01", "date_to": "2026-01-31", "group_by": "day", "format": "csv"}
FLOOD_REQUESTS = 30


@pytest.fixture(scope="module")
def processes(migrated_database, redis_clean):
    empty_broker()
    redis.Redis.from_url(get_settings().result_backend_url).flushdb()
    first, first_url = start_web(env=ENV)
    second, second_url = start_web(env=ENV)
    worker = start_worker(env=ENV)
    yield first_url, second_url, worker
    for process in (first, second, worker):
        process.stop()
    empty_broker()


@pytest.fixture(autouse=True)
def fresh_limits():
    """Each test's users start with no count: ids start again at 1 after every TRUNCATE, while
    the limits' state lives in Redis, so a user of an earlier test would be counted here."""
    client = redis.Redis.from_url(get_settings().result_backend_url)
    for pattern in ("erp:rate:*", "erp:slots:*"):
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)
    client.close()


def report_url(user) -> str:
    return f"/api/v1/organizations/{user.organization_id}/reports/sales"


def started_at(client: httpx.Client, user, status_url: str, timeout: float = 120) -> float:
    """When the task was first seen past PENDING (started, in progress or finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(status_url, headers=user.headers).json()["state"]
        if state != "PENDING":
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{status_url} did not start within {timeout} s")


def finished(client: httpx.Client, user, status_url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(status_url, headers=user.headers).json()
        if status["state"] in ("SUCCESS", "FAILURE"):
            return status
        time.sleep(0.02)
    raise AssertionError(f"{status_url} did not finish within {timeout} s")


def test_two_web_processes_share_one_rate_limit(processes, clean_tables, make_user):
    first_url, second_url, _ = processes
    member = make_user(organization="Pinging")
    accepted = {first_url: 0, second_url: 0}
    started = time.monotonic()
    for number in range(2 * PER_USER_PER_MINUTE + 20):
        url = (first_url, second_url)[number % 2]
        answer = httpx.post(f"{url}/api/v1/tasks/ping", headers=member.headers, timeout=10)
        assert answer.status_code in (202, 429), answer.text
        if answer.status_code == 202:
            accepted[url] += 1
        else:
            assert int(answer.headers["Retry-After"]) >= 1
    elapsed = time.monotonic() - started
    # One more is allowed every 60/30 = 2 s after the burst.
    assert PER_USER_PER_MINUTE <= sum(accepted.values()) <= PER_USER_PER_MINUTE + 1 + elapsed / 2, accepted
    assert min(accepted.values()) > 0, "both processes answered"


def test_a_flooding_organization_delays_another_s_report_by_at_most_its_running_limit(
    processes, clean_tables, make_user, sync_engine
):
    first_url, second_url, _ = processes
    flooder = make_user(organization="Flooder")
    other = make_user(organization="Other")
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sales_orders (organization_id, order_number, order_date, customer, currency, amount)"
                " SELECT :o, 'F-' || g, date '2026-01-01' + (g % 365), 'Customer ' || (g % 20000), 'EUR',"
                " (g % 1000)::numeric FROM generate_series(1, 100000) g"
            ),
            {"o": flooder.organization_id},
        )
    with httpx.Client(base_url=first_url, timeout=30) as client:
        # One heavy report alone: how long one takes on this machine.
        begun = time.monotonic()
        alone = client.post(report_url(flooder), json=HEAVY_REPORT, headers=flooder.headers)
        assert alone.status_code == 202, alone.text
        assert finished(client, flooder, alone.json()["status_url"])["state"] == "SUCCESS"
        report_seconds = time.monotonic() - begun

        # The flood: as many heavy reports as it can, from another process, until it is refused.
        answers: list[int] = []
        stop = threading.Event()

        def flood() -> None:
            with httpx.Client(base_url=second_url, timeout=30) as flooding:
                while not stop.is_set() and answers.count(202) < FLOOD_REQUESTS:
                    answer = flooding.post(report_url(flooder), json=HEAVY_REPORT, headers=flooder.headers)
                    answers.append(answer.status_code)
                    time.sleep(0.05)

        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        try:
            deadline = time.monotonic() + 30
            while 429 not in answers and answers.count(202) < FLOOD_REQUESTS and time.monotonic() < deadline:
                time.sleep(0.02)
            queued_ahead = answers.count(202)
            # The other organization's report waits behind at most REPORTS_RUNNING of the
            # flooder's (one running, the others queued), each about `report_seconds` long.
            sent = time.monotonic()
            mine = client.post(report_url(other), json=LIGHT_REPORT, headers=other.headers)
            assert mine.status_code == 202, mine.text
            bound = REPORTS_RUNNING * report_seconds * 1.5 + 1.0
            waited = started_at(client, other, mine.json()["status_url"], timeout=3 * bound) - sent
        finally:
            stop.set()
            flooding.join(30)
    print(
        f"one heavy report: {report_seconds:.2f} s; flooder's accepted before the other's: {queued_ahead},"
        f" refused: {answers.count(429)}; the other's report started after {waited:.2f} s (bound {bound:.2f} s)"
    )
    assert 429 in answers, f"the flood was never refused: {answers}"
    assert waited <= bound, f"waited {waited:.2f} s behind the flood, more than {bound:.2f} s"


def live_slots(kind: str, organization_id: int) -> int:
    client = redis.Redis.from_url(get_settings().result_backend_url)
    key = concurrency_slots.SLOT_KEY.format(kind=kind, holder=f"organization:{organization_id}")
    now_ms = client.time()[0] * 1000
    try:
        return client.zcount(key, f"({now_ms}", "+inf")
    finally:
        client.close()


def test_a_worker_killed_mid_report_gives_its_slot_back_within_the_lease(
    processes, clean_tables, make_user, sync_engine
):
    first_url, _, worker = processes
    member = make_user(organization="Killed")
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sales_orders (organization_id, order_number, order_date, customer, currency, amount)"
                " SELECT :o, 'K-' || g, date '2026-01-01' + (g % 365), 'Customer ' || g, 'EUR', 1"
                " FROM generate_series(1, 200000) g"
            ),
            {"o": member.organization_id},
        )
    with httpx.Client(base_url=first_url, timeout=30) as client:
        running = client.post(report_url(member), json=HEAVY_REPORT, headers=member.headers)
        queued = client.post(report_url(member), json=HEAVY_REPORT, headers=member.headers)
        assert (running.status_code, queued.status_code) == (202, 202)
        assert client.post(report_url(member), json=HEAVY_REPORT, headers=member.headers).status_code == 429
        started_at(client, member, running.json()["status_url"])
        worker.stop(signal.SIGKILL)
        killed = time.monotonic()
        # The running report's slot lapses; the queued one's stays (it will run when a worker comes).
        while live_slots("report", member.organization_id) > 1:
            # The lease after its last renewal, and slack for a loaded machine.
            assert time.monotonic() - killed < LEASE_SECONDS + 5, "the dead worker's slot did not lapse"
            time.sleep(0.1)
        print(f"the dead worker's slot lapsed {time.monotonic() - killed:.1f} s after the kill")
        again = client.post(report_url(member), json=LIGHT_REPORT, headers=member.headers)
        assert again.status_code == 202, again.text
