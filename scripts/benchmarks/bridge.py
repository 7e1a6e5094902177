"""Per-task cost of a task that runs one query: the bridge against a pooled sync session.

Runs in a forked child, as a prefork worker's task would, and interleaves rounds of each way so
machine noise hits both alike. Prints the median per-task time of each way and the ratio, and
where the bridge's time goes: each step below adds one part of what `run_service` does, on the
same process loop (the thread hop and context copy of `async_to_sync`, a session, the pooled
connection's checkout and the query, the commit, then run_service's own bookkeeping).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

import asyncpg
from asgiref.sync import SyncToAsync, async_to_sync
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from erp.core import bridge
from erp.core.bridge import run_service, shutdown_bridge
from erp.core.config import get_settings
from erp.core.db import create_async_db_engine, create_sync_engine
from erp.core.preflight import ensure_database
from scripts.benchmarks.common import use_benchmark_environment

QUERY = text("SELECT 1")
FLOOR = "floor: asyncpg BEGIN, SELECT, COMMIT on the loop"
STEPS = ("hop: run_coroutine_threadsafe", "hop: async_to_sync", "+ a session", "+ checkout and query", "+ commit")


async def one_query(*, session) -> int:
    return (await session.execute(QUERY)).scalar_one()


def measure(fn, tasks: int) -> float:
    """Seconds per call."""
    started = time.perf_counter()
    for _ in range(tasks):
        fn()
    return (time.perf_counter() - started) / tasks


def run(tasks: int, rounds: int, results) -> None:
    sync_sessions = sessionmaker(create_sync_engine("erp-bench", pool_size=1, max_overflow=1))

    def sync_task() -> int:
        with sync_sessions() as session:
            value = session.execute(QUERY).scalar_one()
            session.commit()
            return value

    def bridge_task() -> int:
        return run_service(one_query)

    naive_sessions = async_sessionmaker(create_async_db_engine("erp-bench", poolclass=NullPool))

    async def naive_call() -> int:
        async with naive_sessions() as session:
            value = await one_query(session=session)
            await session.commit()
            return value

    def naive_task() -> int:
        return async_to_sync(naive_call)()

    process_loop = bridge._current_process_loop()
    SyncToAsync.threadlocal.main_event_loop = process_loop.loop
    SyncToAsync.threadlocal.main_event_loop_pid = process_loop.pid
    sessions = process_loop.session_factory

    async def nothing() -> int:
        return 1

    async def session_only() -> int:
        async with sessions():
            return 1

    async def query_only() -> int:
        async with sessions() as session:
            return (await session.execute(QUERY)).scalar_one()

    async def query_and_commit() -> int:
        async with sessions() as session:
            value = (await session.execute(QUERY)).scalar_one()
            await session.commit()
            return value

    def on_loop(coroutine_function):
        return lambda: asyncio.run_coroutine_threadsafe(coroutine_function(), process_loop.loop).result()

    async def connect_raw():
        url = make_url(get_settings().sync_database_url).set(drivername="postgresql")
        return await asyncpg.connect(url.render_as_string(hide_password=False))

    raw = asyncio.run_coroutine_threadsafe(connect_raw(), process_loop.loop).result()

    async def raw_asyncpg() -> int:
        await raw.execute("BEGIN;")
        value = await raw.fetchval("SELECT 1")
        await raw.execute("COMMIT;")
        return value

    steps = {
        "floor: asyncpg BEGIN, SELECT, COMMIT on the loop": on_loop(raw_asyncpg),
        "hop: run_coroutine_threadsafe": on_loop(nothing),
        "hop: async_to_sync": async_to_sync(nothing),
        "+ a session": async_to_sync(session_only),
        "+ checkout and query": async_to_sync(query_only),
        "+ commit": async_to_sync(query_and_commit),
    }
    ways = {"sync": sync_task, "bridge": bridge_task, **steps}
    for fn in ways.values():  # warm up pools and statement caches
        measure(fn, 200)
    samples = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            samples[name].append(measure(fn, tasks))
    samples["naive"] = [measure(naive_task, max(50, tasks // 20))]
    asyncio.run_coroutine_threadsafe(raw.close(), process_loop.loop).result()
    shutdown_bridge()
    results.update({name: statistics.median(values) for name, values in samples.items()})


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ensure_database(create=True)
    with multiprocessing.Manager() as manager:
        results = manager.dict()
        child = multiprocessing.get_context("fork").Process(target=run, args=(args.tasks, args.rounds, results))
        child.start()
        child.join()
        results = dict(results)
    sync_us, bridge_us, naive_us = (results[name] * 1e6 for name in ("sync", "bridge", "naive"))
    print(f"one-query task, {args.rounds} rounds x {args.tasks} tasks, median per task:")
    print(f"  pooled sync psycopg2 session (baseline): {sync_us:8.0f} us")
    print(f"  erp bridge (async_to_sync, pooled asyncpg): {bridge_us:8.0f} us")
    print(f"  naive async_to_sync + NullPool:            {naive_us:8.0f} us")
    print(f"  {FLOOR:<56} {results[FLOOR] * 1e6:8.0f} us  (the same round trips, no SQLAlchemy, no hop)")
    print("where the bridge's time goes (median per task, each step adds one part):")
    previous = 0.0
    for name in (*STEPS, "bridge"):
        value = results[name] * 1e6
        label = "run_service (retries, time-limit guard, context vars)" if name == "bridge" else name
        print(f"  {label:<56} {value:8.0f} us  (+{value - previous:5.0f})")
        previous = value
    print(f"bridge / baseline ratio: {bridge_us / sync_us:.2f} (target <= 1.5)")
    print(f"naive / baseline ratio:  {naive_us / sync_us:.1f}")


if __name__ == "__main__":
    main()
