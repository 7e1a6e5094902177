"""The schedule-load forecast (`GET /api/v1/admin/schedule-load`) at 10k and 100k mixed schedules.

For each table size: the time of the forecast's service function for a one-hour and a 24-hour
window, next to a baseline measured in the same run on the same connection: one plain SELECT
reading every schedule's definition (the task row joined to its schedule). The forecast has to
read at least that much, so the ratio says what the arithmetic adds on top. Target: a one-hour
window under a second at 100,000 schedules.

The schedules are a mix like a real table's: intervals (every few seconds to every day, each
on its own grid), crontabs drawn from 500 distinct definitions in five zones, solar events at 50
places, clocked and one-off tasks over the next two days, some with jitter, a few paused or
disabled. Own database (erp_bench, or BENCH_DATABASE_URL) and no Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.extras
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from erp.core.db import create_async_db_engine
from erp.tasks.api import forecast as load_forecast
from scripts.benchmarks.beat import connect, recreate_database
from scripts.benchmarks.common import use_benchmark_environment

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
EVENTS = ["sunrise", "sunset", "solar_noon", "dawn_civil", "dusk_civil"]
INTERVALS = [
    (10, "seconds"),
    (30, "seconds"),
    (1, "minutes"),
    (5, "minutes"),
    (15, "minutes"),
    (1, "hours"),
    (1, "days"),
]
REPEATS = 5

BASELINE = """
    SELECT t.id, t.enabled, t.paused_at, t.one_off, t.start_time, t.expires, t.next_run_at, t.last_run_at,
        t.jitter_seconds, i.every, i.period, c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year,
        c.timezone, k.clocked_time, s.event, s.latitude, s.longitude
    FROM periodic_tasks AS t
    LEFT JOIN interval_schedules AS i ON i.id = t.interval_id
    LEFT JOIN crontab_schedules AS c ON c.id = t.crontab_id
    LEFT JOIN clocked_schedules AS k ON k.id = t.clocked_id
    LEFT JOIN solar_schedules AS s ON s.id = t.solar_id
"""


def crontab_pool(rand: random.Random) -> list[tuple[str, str, str, str, str, str]]:
    """500 distinct crontab definitions of the kinds people write."""
    pool: set[tuple[str, str, str, str, str, str]] = set()
    while len(pool) < 500:
        minute = rand.choice(["*", "*/5", "*/15", "0", "30", str(rand.randrange(60)), f"{rand.randrange(30)},45"])
        hour = rand.choice(["*", "*/2", str(rand.randrange(24)), "9-17", "1,13"])
        dow = rand.choice(["*", "*", "mon-fri", "sun", "1,3,5"])
        dom = rand.choice(["*", "*", "*", "1", "15"])
        pool.add((minute, hour, dow, dom, "*", rand.choice(ZONES)))
    return sorted(pool)


def fill_table(rows: int, now: datetime, seed: int = 7) -> None:
    rand = random.Random(seed)
    crontabs = crontab_pool(rand)
    places = [
        (rand.choice(EVENTS), round(rand.uniform(-60, 60), 2), round(rand.uniform(-180, 180), 2)) for _ in range(50)
    ]
    connection = connect()
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE periodic_tasks, interval_schedules, crontab_schedules, clocked_schedules, solar_schedules,"
            " periodic_task_runs, periodic_task_alerts, beat_heartbeats RESTART IDENTITY CASCADE"
        )
        # Triggers NOTIFY and reset next_run_at on every statement: not wanted for a bulk fill.
        cursor.execute("SET session_replication_role = replica")
        interval_ids = [
            psycopg2.extras.execute_values(
                cursor, "INSERT INTO interval_schedules (every, period) VALUES %s RETURNING id", [spec], fetch=True
            )[0][0]
            for spec in INTERVALS
        ]
        tasks: list[tuple[Any, ...]] = []
        crontab_rows: list[tuple[str, ...]] = []
        clocked_rows: list[tuple[datetime]] = []
        solar_rows: list[tuple[Any, ...]] = []
        for number in range(rows):
            kind = rand.random()
            enabled = rand.random() > 0.01
            paused = now if rand.random() < 0.01 else None
            jitter = rand.choice([0, 0, 0, 0, 0, 0, 0, 0, 0, 30])
            schedule: dict[str, Any] = {"interval_id": None, "crontab_id": None, "clocked_id": None, "solar_id": None}
            next_run_at, one_off = None, False
            if kind < 0.5:
                index = rand.randrange(len(INTERVALS))
                every, period = INTERVALS[index]
                step = timedelta(**{period: every})
                schedule["interval_id"] = interval_ids[index]
                next_run_at = now + step * rand.random()
            elif kind < 0.85 or kind >= 0.95:
                crontab_rows.append(rand.choice(crontabs))
                schedule["crontab_id"] = len(crontab_rows)
                if kind >= 0.95:  # a one-off: runs once, at its next run
                    one_off, next_run_at = True, now + timedelta(hours=48 * rand.random())
            elif kind < 0.9:
                solar_rows.append(rand.choice(places))
                schedule["solar_id"] = len(solar_rows)
            else:
                clocked_rows.append((now + timedelta(hours=48 * rand.random()),))
                schedule["clocked_id"] = len(clocked_rows)
            tasks.append(
                (
                    f"bench {number}",
                    "erp.ping",
                    enabled,
                    paused,
                    jitter,
                    one_off,
                    next_run_at,
                    schedule["interval_id"],
                    schedule["crontab_id"],
                    schedule["clocked_id"],
                    schedule["solar_id"],
                )
            )
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO crontab_schedules (minute, hour, day_of_week, day_of_month, month_of_year, timezone) VALUES %s",
            crontab_rows,
            page_size=5000,
        )
        psycopg2.extras.execute_values(
            cursor, "INSERT INTO clocked_schedules (clocked_time) VALUES %s", clocked_rows, page_size=5000
        )
        psycopg2.extras.execute_values(
            cursor, "INSERT INTO solar_schedules (event, latitude, longitude) VALUES %s", solar_rows, page_size=5000
        )
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO periodic_tasks (name, task, enabled, paused_at, jitter_seconds, one_off, next_run_at,"
            " interval_id, crontab_id, clocked_id, solar_id) VALUES %s",
            tasks,
            page_size=5000,
        )
        cursor.execute("ANALYZE")
    connection.close()


async def best_of(action: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(fastest, median) seconds of REPEATS runs, after one warm-up run."""
    await action()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


async def measure(now: datetime) -> dict[str, tuple[float, float]]:
    engine = create_async_db_engine("erp-bench-forecast", poolclass=NullPool)
    try:
        async with async_sessionmaker(engine)() as session:
            return await measure_with(session, now)
    finally:
        await engine.dispose()


async def measure_with(session: AsyncSession, now: datetime) -> dict[str, tuple[float, float]]:
    async def baseline() -> None:
        (await session.execute(text(BASELINE))).all()

    async def hour() -> None:
        await load_forecast.forecast(now, now + timedelta(hours=1), session=session)

    async def day() -> None:
        await load_forecast.forecast(now, now + timedelta(hours=24), session=session)

    return {"baseline": await best_of(baseline), "hour": await best_of(hour), "day": await best_of(day)}


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="table sizes, comma-separated")
    args = parser.parse_args()
    recreate_database()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    print(
        f"{'schedules':>10} {'baseline SELECT':>16} {'forecast 1 h':>13} {'vs baseline':>12} "
        f"{'forecast 24 h':>14} {'vs baseline':>12}   (fastest of {REPEATS}; median in brackets)"
    )
    for size in (int(value) for value in args.sizes.split(",")):
        fill_table(size, now)
        result = asyncio.run(measure(now))
        base, hour, day = result["baseline"], result["hour"], result["day"]
        print(
            f"{size:>10,} {base[0] * 1000:>9.0f} ms ({base[1] * 1000:.0f}) {hour[0] * 1000:>6.0f} ms ({hour[1] * 1000:.0f})"
            f" {hour[0] / base[0]:>10.2f}x {day[0] * 1000:>7.0f} ms ({day[1] * 1000:.0f}) {day[0] / base[0]:>10.2f}x",
            flush=True,
        )
    print("target: a one-hour window under 1 s at 100,000 schedules")


if __name__ == "__main__":
    main()
