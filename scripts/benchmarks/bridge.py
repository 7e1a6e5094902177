"""Per-task cost of a task that runs one query: the bridge against a pooled sync session.

Runs in a forked child, as a prefork worker's task would, and interleaves rounds of each way so
machine noise hits both alike. Prints the median per-task time of each way and the ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

from asgiref.sync import async_to_sync
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from erp.core.bridge import run_service, shutdown_bridge
from erp.core.db import create_async_db_engine, create_sync_engine
from erp.core.preflight import ensure_database
from scripts.benchmarks.common import use_benchmark_environment

QUERY = text("SELECT 1")


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

    ways = {"sync": sync_task, "bridge": bridge_task}
    for fn in ways.values():  # warm up pools and statement caches
        measure(fn, 200)
    samples = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            samples[name].append(measure(fn, tasks))
    samples["naive"] = [measure(naive_task, max(50, tasks // 20))]
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
    print(f"bridge / baseline ratio: {bridge_us / sync_us:.2f} (target <= 2.0)")
    print(f"naive / baseline ratio:  {naive_us / sync_us:.1f}")


if __name__ == "__main__":
    main()
