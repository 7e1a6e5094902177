"""Tasks used only by the eager-mode tests (tests/integration/test_eager_mode.py).

They write to the bridge tests' probe table (tests.support.bridge_tasks.PROBE_TABLE), so a test
can tell what ran, in which order, and what was committed.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from erp.core.bridge import run_service
from erp.core.celery_app import celery_app
from tests.support.bridge_tasks import PROBE_TABLE, insert_probe


async def probe_values_in(*, session: AsyncSession) -> list[str]:
    return list((await session.execute(text(f"SELECT value FROM {PROBE_TABLE} ORDER BY id"))).scalars())


@celery_app.task(name="tests.eager.record")
def record_task(value: str) -> list[str]:
    """Writes `value` in one session, then reads every value committed so far in another."""
    run_service(insert_probe, value, False)
    return run_service(probe_values_in)


async def insert_and_queue(value: str, *, session: AsyncSession) -> str:
    """A service that writes, then queues a task from inside itself (on the bridge's loop)."""
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    queued = record_task.delay(f"{value}:queued")
    return str(queued.id)


@celery_app.task(name="tests.eager.queue_from_a_service")
def queue_from_a_service_task(value: str) -> str:
    return run_service(insert_and_queue, value)


@celery_app.task(bind=True, name="tests.eager.async_record")
async def async_record_task(self: Task, value: str, *, session: AsyncSession) -> dict[str, Any]:
    """An async def task: its session is handed in, committed when it returns."""
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    self.update_state(state="PROGRESS", meta={"written": value})
    return {"value": value, "task_id": self.request.id}


@celery_app.task(name="tests.eager.fails")
def failing_task(value: str) -> None:
    run_service(insert_probe, value, True)


async def queue_then_fail(value: str, *, session: AsyncSession) -> None:
    """A service that writes, queues a task, then fails: its own work is rolled back."""
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    record_task.apply_async((f"{value}:queued",), task_id=value)
    raise ValueError(f"{value} failed after queueing a task")


@celery_app.task(name="tests.eager.queue_then_fail")
def queue_then_fail_task(value: str) -> None:
    run_service(queue_then_fail, value)


@celery_app.task(bind=True, name="tests.async.retry_once")
async def async_retry_once_task(self: Task, value: str, *, session: AsyncSession) -> list[str]:
    """Writes one row per attempt; the first attempt asks for a retry, so its row is rolled back."""
    await session.execute(
        text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": f"{value}:{self.request.retries}"}
    )
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, max_retries=1)
    return list((await session.execute(text(f"SELECT value FROM {PROBE_TABLE} ORDER BY id"))).scalars())


@celery_app.task(name="tests.async.fails")
async def async_failing_task(value: str, *, session: AsyncSession) -> None:
    await session.execute(text(f"INSERT INTO {PROBE_TABLE} (value) VALUES (:value)"), {"value": value})
    raise ValueError(f"failing after inserting {value!r}")
