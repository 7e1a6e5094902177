"""Per-task cost of a task that runs one query: the bridge against a pooled sync session.

Runs in a forked child, as a prefork worker's task would, and interleaves rounds of every way
so machine noise hits all alike. Prints the median per-task time of each way and the ratio,
the CPU time per task of the two (both threads of the child: on a shared machine the wall time
also holds the waits for a core), and where the bridge's time goes beyond the baseline's:

- the round trips each driver makes (the statements asyncpg sends per bridge task are listed:
  BEGIN, the statement, COMMIT, nothing for the pool's reset on return or a pre-ping), and what
  the same three round trips cost with the bare drivers, asyncpg on the loop against psycopg2;
- the thread hop (`run_coroutine_threadsafe`) and what `async_to_sync` adds to it (its
  executor, the context copied to the loop and back; the context copy timed alone too);
- a session made and closed with no statement, async (through `async_to_sync`, as a task's) and sync;
- SQLAlchemy's compile cache: whether both ways hit it, and what a statement costs uncached;
- the steps of the bridge itself: hop, + session, + query, + commit, then run_service's own
  bookkeeping (retries, the time-limit guard, context variables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import multiprocessing
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import psycopg2
from asgiref.sync import SyncToAsync, _restore_context, async_to_sync
from sqlalchemy import event, text
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
UNCACHED = {"compiled_cache": None}

STEPS = (
    ("hop: run_coroutine_threadsafe", "hop_threadsafe"),
    ("hop: async_to_sync", "hop_async_to_sync"),
    ("+ a session (made, closed)", "session_only"),
    ("+ checkout, BEGIN, query, ROLLBACK on close", "query_only"),
    ("+ COMMIT instead (the task's way)", "query_and_commit"),
    ("run_service (retries, time-limit guard, context vars)", "bridge"),
)


async def one_query(*, session) -> int:
    return (await session.execute(QUERY)).scalar_one()


class _CountingProtocol:
    """asyncpg's protocol, noting each message exchange with the server (one round trip each):
    a simple query by its text, a prepared statement's execution by the statement's."""

    def __init__(self, protocol: Any, sent: list[str]) -> None:
        self.protocol, self.sent = protocol, sent

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.protocol, name)
        if name not in ("query", "prepare", "bind_execute", "bind_execute_many", "bind", "execute", "close_statement"):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            if name == "query":
                self.sent.append(args[0])
            else:
                state = kwargs.get("state", args[0] if args else None)
                self.sent.append(f"{name} {getattr(state, 'query', '')}".strip())
            return attribute(*args, **kwargs)

        return counted


def measure(fn: Callable[[], object], tasks: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (every thread of this process) per call."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(tasks):
        fn()
    return (time.perf_counter() - started) / tasks, (time.process_time() - cpu_started) / tasks


def run(tasks: int, rounds: int, results: Any) -> None:
    database_url = make_url(get_settings().sync_database_url).set(drivername="postgresql")
    sync_engine = create_sync_engine("erp-bench", pool_size=1, max_overflow=1)
    sync_sessions = sessionmaker(sync_engine)

    def sync_task() -> int:
        with sync_sessions() as session:
            value = session.execute(QUERY).scalar_one()
            session.commit()
            return value

    def sync_task_uncached() -> int:
        with sync_sessions() as session:
            value = session.execute(QUERY, execution_options=UNCACHED).scalar_one()
            session.commit()
            return value

    def sync_session_only() -> int:
        with sync_sessions():
            return 1

    raw_psycopg2 = psycopg2.connect(database_url.render_as_string(hide_password=False))

    def psycopg2_round_trips() -> int:
        # psycopg2 sends BEGIN before the first statement, then the statement, then COMMIT.
        with raw_psycopg2.cursor() as cursor:
            cursor.execute("SELECT 1")
            value = cursor.fetchone()[0]
        raw_psycopg2.commit()
        return value

    def bridge_task() -> int:
        return run_service(one_query)

    async def one_query_uncached(*, session) -> int:
        return (await session.execute(QUERY, execution_options=UNCACHED)).scalar_one()

    def bridge_task_uncached() -> int:
        return run_service(one_query_uncached)

    naive_sessions = async_sessionmaker(create_async_db_engine("erp-bench", poolclass=NullPool))

    async def naive_call() -> int:
        async with naive_sessions() as session:
            value = await one_query(session=session)
            await session.commit()
            return value

    def naive_task() -> int:
        return async_to_sync(naive_call)()

    shutdown_bridge()
    process_loop = bridge._current_process_loop()
    sent: list[str] = []
    connections: list[Any] = []
    event.listen(
        process_loop.engine.sync_engine,
        "connect",
        lambda dbapi_connection, record: connections.append(dbapi_connection.driver_connection),
    )
    SyncToAsync.threadlocal.main_event_loop = process_loop.loop
    SyncToAsync.threadlocal.main_event_loop_pid = process_loop.pid
    sessions = process_loop.session_factory

    async def nothing() -> int:
        return 1

    async def session_only() -> int:
        session = sessions()
        await session.close()
        return 1

    async def query_only() -> int:
        session = sessions()
        value = (await session.execute(QUERY)).scalar_one()
        await session.close()
        return value

    async def query_and_commit() -> int:
        session = sessions()
        value = (await session.execute(QUERY)).scalar_one()
        await session.commit()
        await session.close()
        return value

    def on_loop(coroutine_function: Callable[[], Coroutine[Any, Any, int]]) -> Callable[[], int]:
        return lambda: asyncio.run_coroutine_threadsafe(coroutine_function(), process_loop.loop).result()

    raw_asyncpg = asyncio.run_coroutine_threadsafe(
        asyncpg.connect(database_url.render_as_string(hide_password=False)), process_loop.loop
    ).result()

    async def asyncpg_round_trips() -> int:
        await raw_asyncpg.execute("BEGIN;")
        value = await raw_asyncpg.fetchval("SELECT 1")
        await raw_asyncpg.execute("COMMIT;")
        return value

    def context_copy() -> None:
        # What async_to_sync does with the caller's context: copied, restored on the loop,
        # restored again in the caller.
        context = contextvars.copy_context()
        _restore_context(context)
        _restore_context(context)

    ways: dict[str, Callable[[], object]] = {
        "sync": sync_task,
        "bridge": bridge_task,
        "psycopg2_round_trips": psycopg2_round_trips,
        "asyncpg_round_trips": on_loop(asyncpg_round_trips),
        "hop_threadsafe": on_loop(nothing),
        "hop_async_to_sync": async_to_sync(nothing),
        "context_copy": context_copy,
        "session_only": async_to_sync(session_only),
        "query_only": async_to_sync(query_only),
        "query_and_commit": async_to_sync(query_and_commit),
        "sync_session_only": sync_session_only,
        "sync_uncached": sync_task_uncached,
        "bridge_uncached": bridge_task_uncached,
    }
    for fn in ways.values():  # warm up pools and statement caches
        measure(fn, 200)
    for connection in connections:  # count what the next ten tasks send, then stop counting
        connection._protocol = _CountingProtocol(connection._protocol, sent)
    for _ in range(10):
        bridge_task()
    for connection in connections:
        connection._protocol = connection._protocol.protocol
    results["statements"] = list(sent)
    with sync_sessions() as session:
        cached = session.execute(QUERY).context
        results["sync_cache_hit"] = cached.cache_hit == cached.dialect.CACHE_HIT
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            samples[name].append(measure(fn, tasks))
    samples["naive"] = [measure(naive_task, max(50, tasks // 20))]
    asyncio.run_coroutine_threadsafe(raw_asyncpg.close(), process_loop.loop).result()
    raw_psycopg2.close()
    shutdown_bridge()
    for name, values in samples.items():
        results[name] = statistics.median(wall for wall, _ in values)
        results[f"{name}_cpu"] = statistics.median(cpu for _, cpu in values)
        results[f"{name}_rounds"] = [wall for wall, _ in values]


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ensure_database(create=True)
    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        child = multiprocessing.get_context("fork").Process(target=run, args=(args.tasks, args.rounds, shared))
        child.start()
        child.join()
        results = dict(shared)

    def us(name: str) -> float:
        return float(results[name]) * 1e6

    def line(label: str, value: float, note: str = "") -> None:
        print(f"  {label:<58} {value:8.1f} us{note}")

    sync_us, bridge_us = us("sync"), us("bridge")
    print(f"one-query task, {args.rounds} rounds x {args.tasks} tasks, median per task (forked child):")
    line("pooled sync psycopg2 session (baseline)", sync_us, f"   cpu {us('sync_cpu'):6.1f} us")
    line("erp bridge (run_service: async_to_sync, pooled asyncpg)", bridge_us, f"   cpu {us('bridge_cpu'):6.1f} us")
    line("naive async_to_sync + NullPool", us("naive"))
    per_task = len(results["statements"]) / 10
    statements = " | ".join(dict.fromkeys(results["statements"]))
    print(f"statements asyncpg sends per bridge task: {per_task:g} ({statements})")
    print("where the difference goes (median per task):")

    def cpu(name: str) -> str:
        return f"   cpu {us(f'{name}_cpu'):6.1f} us"

    def difference(label: str, names: tuple[str, ...], minus: tuple[str, ...], note: str = "") -> None:
        wall = sum(us(name) for name in names) - sum(us(name) for name in minus)
        cpu_time = sum(us(f"{name}_cpu") for name in names) - sum(us(f"{name}_cpu") for name in minus)
        line(label, wall, f"{note}   cpu {cpu_time:6.1f} us")

    line("psycopg2 alone: BEGIN, SELECT 1, COMMIT", us("psycopg2_round_trips"), cpu("psycopg2_round_trips"))
    line(
        "asyncpg alone on the loop: the same, with the thread hop",
        us("asyncpg_round_trips"),
        cpu("asyncpg_round_trips"),
    )
    difference(
        "  asyncpg vs psycopg2 (less the hop)", ("asyncpg_round_trips",), ("hop_threadsafe", "psycopg2_round_trips")
    )
    line("thread hop (run_coroutine_threadsafe)", us("hop_threadsafe"), cpu("hop_threadsafe"))
    difference("async_to_sync over that hop (executor, context copy)", ("hop_async_to_sync",), ("hop_threadsafe",))
    line("  of which the context copy and its two restores", us("context_copy"), cpu("context_copy"))
    difference("session made and closed, async (less the hop)", ("session_only",), ("hop_async_to_sync",))
    line("session made and closed, sync", us("sync_session_only"), cpu("sync_session_only"))
    cache = "hit" if results["sync_cache_hit"] else "MISSED"
    difference(f"compile cache (both ways {cache}): sync, uncached costs", ("sync_uncached",), ("sync",), " more")
    difference("compile cache: bridge, uncached costs", ("bridge_uncached",), ("bridge",), " more")
    print("the bridge step by step (each adds one part):")
    previous, previous_cpu = 0.0, 0.0
    for label, name in STEPS:
        value, cpu = us(name), us(f"{name}_cpu")
        line(label, value, f"  (+{value - previous:6.1f})   cpu {cpu:6.1f} us (+{cpu - previous_cpu:6.1f})")
        previous, previous_cpu = value, cpu
    rounds = ", ".join(
        f"{wall / sync:.2f}" for wall, sync in zip(results["bridge_rounds"], results["sync_rounds"], strict=True)
    )
    print(f"bridge / baseline per round: {rounds}")
    print(
        f"bridge / baseline ratio: {bridge_us / sync_us:.2f} (target <= 1.5); CPU: {us('bridge_cpu') / us('sync_cpu'):.2f}"
    )
    print(f"naive / baseline ratio:  {us('naive') / sync_us:.1f}")


if __name__ == "__main__":
    main()
