"""The console's pages at 100,000 schedules and a 1,000,000-row run ledger, against the API.

Each console page is timed next to the API route answering the same question, in the same
run, through the same real uvicorn: the schedules page (50 rows, each with its last run and a
sparkline of its last 60 occurrences) against `GET /api/v1/admin/periodic-tasks` (50 rows,
each with its last run), first page, a search by name and a page deep in the table (the
console follows the last id, the API an offset); the runs page against `GET
/api/v1/admin/runs`, newest first and failed only. The health strip every console page shows
is read by its own request once the page is there (it counts the last hour of the ledger): it
is timed on a line of its own. Printed: the median of N rounds of each and the ratio
console / API (target: at most 1).

The tables are filled by PostgreSQL itself (generate_series): intervals and crontabs, and
occurrences every 10 minutes back from now, mostly succeeded, some failed, skipped or late: 60
for each of the first 1,000 schedules (a page's sparklines full), the rest of the million shared
by the others (about 9.5 each). Own database (erp_bench_console, or BENCH_DATABASE_URL) and Redis databases
(BENCH_REDIS_BROKER_DB and BENCH_REDIS_RESULT_DB, else 8 and 9).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import httpx

BENCH_DEFAULTS = {
    "BENCH_DATABASE_URL": "postgresql://root@127.0.0.1:5432/erp_bench_console",
    "BENCH_REDIS_BROKER_DB": "8",
    "BENCH_REDIS_RESULT_DB": "9",
}
for _name, _value in BENCH_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

from scripts.benchmarks.api import create_token  # noqa: E402  (after the environment above)
from scripts.benchmarks.beat import connect, recreate_database  # noqa: E402
from scripts.benchmarks.common import use_benchmark_environment  # noqa: E402

RUNS = """INSERT INTO periodic_task_runs (periodic_task_id, periodic_task_name, task_name, scheduled_at, due_at,
        message_id, state, skip_reason, sent_at, started_at, finished_at, lateness_seconds, error_type,
        error_message, attempts, publish_count)
    SELECT t, 'bench ' || lpad(t::text, 6, '0'), 'erp.ping', slot, slot, md5(t::text || '-' || slot::text),
        CASE WHEN g % 25 = 0 THEN 'skipped' WHEN g % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
        CASE WHEN g % 25 = 0 THEN 'overlap' END,
        CASE WHEN g % 25 <> 0 THEN slot END,
        CASE WHEN g % 25 <> 0 THEN slot + (g % 90) * interval '1 second' END,
        CASE WHEN g % 25 <> 0 THEN slot + (g % 90 + 2) * interval '1 second' END,
        CASE WHEN g % 25 <> 0 THEN g % 90 END,
        CASE WHEN g % 20 = 0 AND g % 25 <> 0 THEN 'TimeoutError' END,
        CASE WHEN g % 20 = 0 AND g % 25 <> 0 THEN 'the supplier did not answer' END,
        CASE WHEN g % 25 <> 0 THEN 1 ELSE 0 END, CASE WHEN g % 25 <> 0 THEN 1 ELSE 0 END
    FROM (
        SELECT g, {schedule} AS t, date_trunc('minute', now()) - ({back} + 1) * interval '10 minutes' AS slot
        FROM generate_series(1, {count}) AS g
    ) AS occurrences"""
FILL = [
    "SET session_replication_role = replica",  # no NOTIFY and next_run_at trigger per row
    "INSERT INTO interval_schedules (every, period) VALUES (10, 'seconds'), (1, 'minutes'), (5, 'minutes'),"
    " (15, 'minutes'), (1, 'hours'), (1, 'days')",
    "INSERT INTO crontab_schedules (minute, hour, day_of_week, day_of_month, month_of_year, timezone)"
    " SELECT (n % 60)::text, (n % 24)::text, '*', '*', '*', (ARRAY['UTC', 'Europe/Berlin', 'America/New_York'])[1 + n % 3]"
    " FROM generate_series(1, 500) AS n",
    # Half intervals, half crontabs; names sort as numbers do (bench 000001 ...).
    """INSERT INTO periodic_tasks (name, task, interval_id, crontab_id, next_run_at, enabled, consecutive_failures)
    SELECT 'bench ' || lpad(n::text, 6, '0'), 'erp.ping',
        CASE WHEN n % 2 = 0 THEN 1 + n % 6 END, CASE WHEN n % 2 = 1 THEN 1 + n % 500 END,
        now() + (n % 3600) * interval '1 second', n % 100 <> 0, CASE WHEN n % 50 = 0 THEN 3 ELSE 0 END
    FROM generate_series(1, :schedules) AS n""",
    # Occurrence k of schedule t, every 10 minutes back from now; 1 in 20 failed, 1 in 25 skipped.
    # The first :full schedules (the first pages) have a full sparkline of 60; the rest share
    # what is left of the ledger.
    RUNS.format(count=":full * 60", schedule="1 + (g - 1) % :full", back="(g - 1) / :full"),
    RUNS.format(
        count=":runs - :full * 60",
        schedule=":full + 1 + (g - 1) % (:schedules - :full)",
        back="(g - 1) / (:schedules - :full)",
    ),
    "SET session_replication_role = DEFAULT",
    "ANALYZE",
]


FULL_HISTORIES = 1000


def fill(schedules: int, runs: int) -> float:
    """The tables, on one connection (session_replication_role is the session's), committed."""
    started = time.perf_counter()
    connection = connect()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in FILL:
                for name, value in (("schedules", schedules), ("runs", runs), ("full", FULL_HISTORIES)):
                    statement = statement.replace(f":{name}", str(value))
                cursor.execute(statement)
    finally:
        connection.close()
    return time.perf_counter() - started


def sign_in(client: httpx.Client, token: str) -> None:
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, "no login form"
    response = client.post("/console/login", data={"csrf": csrf.group(1), "token": token, "next": "/console"})
    assert response.status_code == 303, response.text[:200]


def get_ms(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return elapsed * 1000


def medians_ms(
    console: httpx.Client, console_url: str, api: httpx.Client, api_url: str, rounds: int
) -> tuple[float, float]:
    """Median times of the two, asked in turn (a busy moment of the machine weighs on both alike)."""
    get_ms(console, console_url), get_ms(api, api_url)  # warm-up, and a check of the answers
    pairs = [(get_ms(console, console_url), get_ms(api, api_url)) for _ in range(rounds)]
    return statistics.median(pair[0] for pair in pairs), statistics.median(pair[1] for pair in pairs)


PAIRS = [
    ("schedules, first page", "/console/schedules", "/api/v1/admin/periodic-tasks?limit=50"),
    (
        "schedules, name search",
        "/console/schedules?q=bench 0999",
        "/api/v1/admin/periodic-tasks?name=bench 0999&limit=50",
    ),
    (
        "schedules, at row 90,000",
        "/console/schedules?after=90000",
        "/api/v1/admin/periodic-tasks?offset=90000&limit=50",
    ),
    ("runs, newest", "/console/runs", "/api/v1/admin/runs?limit=50"),
    ("runs, failed", "/console/runs?state=failed", "/api/v1/admin/runs?state=failed&limit=50"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000_000, help="rows of the run ledger")
    parser.add_argument("--rounds", type=int, default=30, help="requests per page (the median is printed)")
    args = parser.parse_args()
    use_benchmark_environment()
    from tests.support.processes import start_web

    recreate_database()
    print(
        f"filled {args.schedules:,} schedules and {args.runs:,} ledger rows in {fill(args.schedules, args.runs):.1f} s"
    )
    token = create_token()
    web, base_url = start_web()
    try:
        with (
            httpx.Client(base_url=base_url, timeout=60) as console,
            httpx.Client(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as api,
        ):
            sign_in(console, token)
            print(f"{'page':<26} {'console':>10} {'API':>10} {'console / API':>14}   (median of {args.rounds})")
            for label, console_url, api_url in PAIRS:
                console_ms, api_ms = medians_ms(console, console_url, api, api_url, args.rounds)
                print(f"{label:<26} {console_ms:>7.1f} ms {api_ms:>7.1f} ms {console_ms / api_ms:>14.2f}", flush=True)
            live = {"X-Console-Live": "1"}
            health_ms = statistics.median(get_ms(console, "/console/live/health", live) for _ in range(args.rounds))
            print(f"{'health strip (after it)':<26} {health_ms:>7.1f} ms {'':>10} {'':>14}   (no API route)")
    finally:
        web.stop()
    print("target: each console page within the API's own latency for the same query (ratio <= 1)")


if __name__ == "__main__":
    main()
