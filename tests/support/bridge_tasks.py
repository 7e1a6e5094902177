"""Tasks used only by the bridge tests; the worker under test loads them with `-I`."""

from __future__ import annotations

import asyncio
import os
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app

PROBE_TABLE = "bridge_probe"


def probe_values(sync_engine) -> list[str]:
    """What the test tasks wrote, in order (read by the tests, not by the tasks)."""
    with sync_engine.connect() as connection:
        return list(connection.execute(text(f"SELECT value FROM {PROBE_TABLE} ORDER BY id")).scalars())


async def insert_probe(value: str, fail: bool, *, session: AsyncSession) -> int:
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    if fail:
        raise ValueError(f"failing after inserting {value!r}")
    return 1


async def backend_pid(*, session: AsyncSession) -> list[int]:
    return [os.getpid(), (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()]


async def sleep_in_database(seconds: float, *, session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    await asyncio.sleep(0)


@celery_app.task(name="tests.insert_probe")
def insert_probe_task(value: str, fail: bool = False) -> int:
    return run_service(insert_probe, value, fail)


@celery_app.task(name="tests.backend_pid")
def backend_pid_task() -> list[int]:
    return run_service(backend_pid)


@celery_app.task(name="tests.sleep_in_database", soft_time_limit=1, time_limit=30)
def sleep_in_database_task(seconds: float) -> None:
    run_service(sleep_in_database, seconds)


@celery_app.task(name="tests.start_sleep_finish")
def start_sleep_finish_task(label: str, seconds: float) -> int:
    """Records its start (committed at once), sleeps, records its end: a task one can kill mid-run."""
    run_service(insert_probe, f"{label}:started:{os.getpid()}", False)
    time.sleep(seconds)
    run_service(insert_probe, f"{label}:done", False)
    return os.getpid()


async def insert_then_block(value: str, seconds: float, *, session: AsyncSession) -> int:
    """Writes a row, then blocks the event loop (a synchronous call inside async code)."""
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is what this test task is for
    return 1


@celery_app.task(name="tests.insert_then_block", soft_time_limit=1, time_limit=30)
def insert_then_block_task(value: str, seconds: float) -> int:
    return run_service(insert_then_block, value, seconds)


async def nested_service(depth: int, *, session: AsyncSession) -> int:
    """Calls run_service again from inside a service (through sync_to_async), `depth` levels deep."""
    from asgiref.sync import sync_to_async

    await session.execute(text("SELECT 1"))
    if depth == 0:
        return 0
    return 1 + await sync_to_async(run_service, thread_sensitive=False)(nested_service, depth - 1)


@celery_app.task(name="tests.nested_service")
def nested_service_task(depth: int) -> int:
    return run_service(nested_service, depth)


async def insert_then_wait(value: str, seconds: float, *, session: AsyncSession) -> None:
    """One transaction that stays open: its row exists only if the whole task ran."""
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    await asyncio.sleep(seconds)


@celery_app.task(name="tests.attempt_then_work")
def attempt_then_work_task(label: str, seconds: float) -> int:
    """Records each attempt (committed at once), then does its work in one transaction of `seconds`."""
    run_service(insert_probe, f"{label}:attempt:{os.getpid()}", False)
    run_service(insert_then_wait, f"{label}:done", seconds)
    return os.getpid()


# --- periodic runs counted by their bodies (run ledger tests) -----------------------------------

RUNS_TABLE = "ledger_probe"


async def record_run(message_id: str, phase: str, *, session: AsyncSession) -> None:
    await session.execute(
        text(f"INSERT INTO {RUNS_TABLE} (message_id, phase, pid) VALUES (:message_id, :phase, :pid)"),
        {"message_id": message_id, "phase": phase, "pid": os.getpid()},
    )


@celery_app.task(name="tests.count_run", bind=True)
def count_run_task(self, seconds: float = 0.0) -> str:
    """Writes one row per execution of its body (committed at once), then its end after `seconds`."""
    run_service(record_run, self.request.id, "started")
    if seconds:
        time.sleep(seconds)
        run_service(record_run, self.request.id, "done")
    return self.request.id


@celery_app.task(name="tests.always_fails", bind=True)
def always_fails_task(self) -> None:
    run_service(record_run, self.request.id, "started")
    raise RuntimeError("this task always fails")


@celery_app.task(name="tests.garbage_collector_state")
def garbage_collector_state() -> dict[str, int]:
    """What the collector of the child running this task tracks: frozen, and in its generations."""
    import gc

    return {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
