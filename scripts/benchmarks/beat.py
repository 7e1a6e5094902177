"""The database scheduler at 1k, 10k and 100k schedules, with a real beat process and Redis.

For each table size: time from beat's start to its first message; a burst of due runs
(up to 10,000) next to the raw `send_task` rate of one process measured in the same run;
edit-to-effect latency; beat's CPU and memory while idle. Own database (erp_bench) and Redis
databases 14 and 15.

`--herds`: a thundering herd, N schedules of which H share one slot, beat (or two beats)
already running and idle: the lateness of the messages (when the queue first held the k-th
message, minus the slot) at the first, p50, p99 and last, against the time one process takes to
send H messages with plain kombu `send_task`, measured just before and after each herd (the
target: the last within half of it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import psycopg2.extras
import redis
from alembic import command
from alembic.config import Config
from celery.result import denied_join_result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from scripts.benchmarks.common import use_benchmark_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
QUEUE = "celery"
BURST = 10_000


def recreate_database() -> None:
    url = make_url(get_settings().sync_database_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", hide_parameters=True)
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    server.dispose()
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    command.upgrade(config, "head")


def connect():
    return psycopg2.connect(
        make_url(get_settings().sync_database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def execute(statement: str, parameters: tuple = ()) -> None:
    """Run one statement in its own transaction (committed when this returns)."""
    connection = connect()
    try:
        # Not `with connection:` -- since psycopg2 2.9 that opens a transaction even in autocommit.
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement, parameters)
    finally:
        connection.close()


def count_ledger_rows() -> int:
    """Occurrences the run ledger holds (each burst run is one, written while it was sent)."""
    connection = connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM periodic_task_runs")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def broker() -> redis.Redis:
    return redis.Redis.from_url(get_settings().broker_url)


def queued() -> int:
    return broker().llen(QUEUE)


def fill_table(rows: int) -> None:
    """`rows` hourly schedules whose next runs are spread over the coming hour (none due)."""
    connection = connect()
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE periodic_tasks, interval_schedules, beat_heartbeats, periodic_task_runs, periodic_task_alerts"
            " RESTART IDENTITY CASCADE"
        )
        cursor.execute("INSERT INTO interval_schedules (every, period) VALUES (1, 'hours') RETURNING id")
        interval_id = cursor.fetchone()[0]
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO periodic_tasks (name, task, interval_id, next_run_at) VALUES %s",
            [(f"bench-{number:06d}", "erp.ping", interval_id, 60 + number % 3600) for number in range(rows)],
            template="(%s, %s, %s, now() + %s * interval '1 second')",
            page_size=5000,
        )
        # The product's own periodic jobs (health check, file retention) would add their messages
        # to the counts: disabled, which beat keeps as an admin's choice.
        for name, entry in (celery_app.conf.beat_schedule or {}).items():
            cursor.execute(
                "INSERT INTO periodic_tasks (name, task, interval_id, enabled, from_config)"
                " VALUES (%s, %s, %s, false, true)",
                (name, entry["task"], interval_id),
            )
    connection.close()
    execute("ANALYZE periodic_tasks")


def raw_send_rate(messages: int) -> float:
    """Messages per second of plain kombu `send_task` from one process with one producer and no
    result subscription (how Celery's own beat sends): the fastest a user's single process gets."""
    with celery_app.producer_or_acquire() as producer, denied_join_result():
        started = time.perf_counter()
        for number in range(messages):
            celery_app.send_task("erp.ping", task_id=f"raw-{number}", producer=producer)
        elapsed = time.perf_counter() - started
    broker().flushdb()
    return messages / elapsed


def start_beat() -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "erp.core.celery_app",
            "beat",
            "-S",
            "erp.tasks.db_scheduler.DatabaseScheduler",
            "--loglevel",
            "WARNING",
            "--pidfile=",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def wait_for_queue(length: int, since: float, timeout: float = 300) -> float:
    """Seconds from `since` (a perf_counter) until the queue holds `length` messages."""
    client = broker()
    started = since
    while client.llen(QUEUE) < length:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"bench_beat: only {client.llen(QUEUE)} of {length} messages after {timeout} s")
        time.sleep(0.002)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(rows: int, idle_seconds: float, edits: int) -> dict:
    fill_table(rows)
    broker().flushdb()
    execute("UPDATE periodic_tasks SET next_run_at = now() WHERE id = 1")
    started = time.perf_counter()
    beat = start_beat()
    try:
        first_message = wait_for_queue(1, since=started, timeout=120)
        broker().flushdb()

        time.sleep(1)
        cpu_before, idle_started = cpu_seconds(beat.pid), time.perf_counter()
        time.sleep(idle_seconds)
        idle_cpu = (cpu_seconds(beat.pid) - cpu_before) / (time.perf_counter() - idle_started)
        idle_rss = rss_mib(beat.pid)

        latencies = []
        for number in range(edits):
            # What an API edit does: the row's next run moves to now.
            broker().flushdb()
            edited_at = time.perf_counter()
            execute("UPDATE periodic_tasks SET next_run_at = now() WHERE id = %s", (rows // 2 + number,))
            latencies.append(wait_for_queue(1, since=edited_at, timeout=30))
            time.sleep(0.2)

        burst = min(BURST, rows)
        broker().flushdb()
        ledger_before = count_ledger_rows()
        burst_started = time.perf_counter()
        execute("UPDATE periodic_tasks SET next_run_at = now() WHERE id <= %s", (burst,))
        burst_seconds = wait_for_queue(burst, since=burst_started)
        ledger_rows = count_ledger_rows() - ledger_before
    finally:
        beat.terminate()
        beat.wait(30)
    return {
        "rows": rows,
        "first_message": first_message,
        "burst": burst,
        "burst_rate": burst / burst_seconds,
        "ledger_rate": ledger_rows / burst_seconds,
        "edit_median": statistics.median(latencies),
        "edit_max": max(latencies),
        "idle_cpu": idle_cpu,
        "idle_rss": idle_rss,
    }


def watch_queue(expected: int, since: float, timeout: float = 300) -> list[tuple[float, int]]:
    """(seconds since `since`, queue length) each time the length grows, until `expected`."""
    client = broker()
    seen: list[tuple[float, int]] = []
    last = 0
    while last < expected:
        length = client.llen(QUEUE)
        now = time.perf_counter() - since
        if length > last:
            seen.append((now, length))
            last = length
        if now > timeout:
            raise SystemExit(f"bench_beat: only {last} of {expected} messages after {timeout} s")
        time.sleep(0.001)
    return seen


def lateness_at(seen: list[tuple[float, int]], count: int) -> float:
    """When the queue first held `count` messages."""
    return next(moment for moment, length in seen if length >= count)


def measure_herd(rows: int, herd: int, beats: int) -> dict:
    fill_table(rows)
    broker().flushdb()
    processes = [start_beat() for _ in range(beats)]
    try:
        time.sleep(4)  # started, synced, idle: the next run is a minute away
        connection = connect()
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            slot = cursor.fetchone()[0] + timedelta(seconds=5)
            cursor.execute("UPDATE periodic_tasks SET next_run_at = %s WHERE id <= %s", (slot, herd))
        # Asked once the update is committed; PostgreSQL's clock is the machine's, as beat's is.
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT extract(epoch FROM %s - clock_timestamp())", (slot,))
            until_slot = float(cursor.fetchone()[0])
            slot_clock = time.perf_counter() + until_slot
        connection.close()
        if until_slot < 0.5:
            raise SystemExit("bench_beat: the herd's update took too long; its slot passed")
        while time.perf_counter() < slot_clock:
            time.sleep(0.0005)
        seen = watch_queue(herd, since=slot_clock)
        duplicates = broker().llen(QUEUE) - herd
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    return {
        "rows": rows,
        "herd": herd,
        "beats": beats,
        "first": lateness_at(seen, 1),
        "p50": lateness_at(seen, max(1, herd // 2)),
        "p99": lateness_at(seen, max(1, herd * 99 // 100)),
        "last": lateness_at(seen, herd),
        "extra": duplicates,
    }


def herds(spec: str, beats: int) -> None:
    """The herd scenarios of `spec` ("10000/5000,100000/50000"), each with 1..`beats` beats.

    The machine's speed drifts from minute to minute: the baseline is measured just before and
    just after each herd, and the herd compared with the mean of the two.
    """
    broker().flushdb()
    print(
        f"{'schedules':>10} {'herd':>7} {'beats':>5} {'first':>7} {'p50':>7} {'p99':>7} {'last':>7}"
        f" {'raw before':>10} {'raw after':>9} {'raw sends all':>13} {'last / raw':>10}"
    )
    for pair in spec.split(","):
        rows, herd = (int(value) for value in pair.split("/"))
        for count in range(1, beats + 1):
            raw_before = raw_send_rate(BURST)
            result = measure_herd(rows, herd, count)
            raw_after = raw_send_rate(BURST)
            raw_seconds = herd / ((raw_before + raw_after) / 2)
            print(
                f"{rows:>10,} {herd:>7,} {count:>5} {result['first']:>6.2f}s {result['p50']:>6.2f}s"
                f" {result['p99']:>6.2f}s {result['last']:>6.2f}s {raw_before:>8,.0f}/s {raw_after:>7,.0f}/s"
                f" {raw_seconds:>12.2f}s {result['last'] / raw_seconds:>10.2f}"
                + (f"  {result['extra']} extra!" if result["extra"] else ""),
                flush=True,
            )
    print(
        "raw: plain kombu send_task of 10,000 messages from one process, just before and after each herd;"
        " raw sends all: the herd's size at their mean rate"
    )
    print("targets: first within 0.5 s of the slot; last / raw <= 0.5 (the herd twice as fast as plain kombu)")


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000", help="table sizes, comma-separated")
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--herds", default="", help='herd scenarios "schedules/due,...", e.g. 10000/5000,100000/50000')
    parser.add_argument("--beats", type=int, default=1, help="herds: run each with 1 up to this many beats")
    args = parser.parse_args()
    recreate_database()
    broker().flushdb()
    if args.herds:
        herds(args.herds, args.beats)
        return
    raw_rate = raw_send_rate(BURST)
    print(f"raw send_task rate, one process: {raw_rate:,.0f} messages/s (baseline)")
    print(
        f"{'schedules':>10} {'first msg':>10} {'burst':>7} {'burst rate':>12} {'vs raw':>7} "
        f"{'edit p50':>9} {'edit max':>9} {'idle CPU':>9} {'idle RSS':>9}"
    )
    results = []
    for size in (int(value) for value in args.sizes.split(",")):
        result = measure(size, args.idle_seconds, args.edits)
        results.append(result)
        print(
            f"{result['rows']:>10,} {result['first_message']:>9.2f}s {result['burst']:>7,} "
            f"{result['burst_rate']:>10,.0f}/s {result['burst_rate'] / raw_rate:>7.2f} "
            f"{result['edit_median'] * 1000:>7.0f}ms {result['edit_max'] * 1000:>7.0f}ms "
            f"{result['idle_cpu'] * 100:>8.2f}% {result['idle_rss']:>7.1f}MB  "
            f"ledger {result['ledger_rate']:,.0f} rows/s",
            flush=True,
        )
    # The machine's speed drifts: the baseline again, after, and the ratios against the mean.
    raw_after = raw_send_rate(BURST)
    mean = (raw_rate + raw_after) / 2
    print(f"raw send_task rate again: {raw_after:,.0f} messages/s; mean {mean:,.0f}/s")
    for result in results:
        print(f"{result['rows']:>10,} schedules: burst / mean raw = {result['burst_rate'] / mean:.2f}")
    print("targets: burst >= 1.0 of raw; edit-to-effect <= 100 ms at 100k; idle CPU and memory flat as the table grows")


if __name__ == "__main__":
    main()
