"""Helpers for the scheduler tests: create schedules in the real database, read the real queue."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime

import redis
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from erp.core.config import get_settings
from erp.tasks.scheduler_models import CrontabScheduleDB, IntervalScheduleDB, PeriodicTaskDB

QUEUE = "celery"


def broker() -> redis.Redis:
    return redis.Redis.from_url(get_settings().broker_url)


def empty_broker() -> None:
    client = broker()
    client.flushdb()
    client.close()


def queued_runs(name_prefix: str = "") -> list[dict]:
    """Every periodic-run message waiting in the queue, oldest first, optionally by task name."""
    client = broker()
    raw = client.lrange(QUEUE, 0, -1)
    client.close()
    runs = []
    for item in reversed(raw):  # LPUSH puts the newest first
        message = json.loads(item)
        headers = message["headers"]
        name = headers.get("periodic_task_name")
        if name is None or not name.startswith(name_prefix):
            continue
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        runs.append(
            {
                "id": headers["id"],
                "task": headers["task"],
                "name": name,
                "scheduled_at": datetime.fromisoformat(headers["periodic_task_scheduled_at"]),
                "args": args,
                "kwargs": kwargs,
            }
        )
    return runs


def wait_for(condition, timeout: float = 10, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout} s")


def wait_for_none_left(remaining, stall: float, interval: float = 0.5, message: str = "none left") -> None:
    """Wait until `remaining()` is 0, for as long as it keeps going down: a backlog drains at
    the machine's speed, so the wait fails only when nothing is done for `stall` seconds."""
    fewest = remaining()
    deadline = time.monotonic() + stall
    while fewest:
        time.sleep(interval)
        left = remaining()
        if left < fewest:
            fewest, deadline = left, time.monotonic() + stall
        elif time.monotonic() > deadline:
            raise AssertionError(f"{message}: {left} left, none done in {stall} s")


def add_interval_task(engine, name: str, every: int = 1, period: str = "seconds", **fields) -> int:
    with Session(engine) as session, session.begin():
        task = PeriodicTaskDB(
            name=name,
            task=fields.pop("task", "erp.ping"),
            interval=IntervalScheduleDB(every=every, period=period),
            **fields,
        )
        session.add(task)
        session.flush()
        return task.id


def add_crontab_task(engine, name: str, **crontab) -> int:
    with Session(engine) as session, session.begin():
        task = PeriodicTaskDB(name=name, task="erp.ping", crontab=CrontabScheduleDB(**crontab))
        session.add(task)
        session.flush()
        return task.id


def update_task(engine, name: str, **values) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(PeriodicTaskDB).where(PeriodicTaskDB.name == name).values(**values))


def find_task(engine, name: str) -> PeriodicTaskDB | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(select(PeriodicTaskDB).where(PeriodicTaskDB.name == name)).one_or_none()


def get_task(engine, name: str) -> PeriodicTaskDB:
    task = find_task(engine, name)
    assert task is not None, f"no periodic task named {name!r}"
    return task


def utcnow() -> datetime:
    return datetime.now(UTC)


class QueueWatcher:
    """Notes when each periodic run first appears in the queue (polled every few milliseconds)."""

    def __init__(self, name_prefix: str, interval: float = 0.005) -> None:
        self.name_prefix = name_prefix
        self.interval = interval
        self.first_seen: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueueWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            seen_at = utcnow()
            for run in queued_runs(self.name_prefix):
                self.first_seen.setdefault(run["id"], seen_at)
            time.sleep(self.interval)


def beat_in_transaction(engine, pid: int, table: str) -> bool:
    """Is the beat process `pid` inside a transaction, between statements, holding locks on `table`?"""
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = :name AND datname = current_database()"
                    " AND state LIKE 'idle in transaction%'"
                    " AND pid IN (SELECT pid FROM pg_locks WHERE relation = CAST(:table AS regclass))"
                ),
                {"name": f"erp-beat:{pid}", "table": table},
            ).scalar()
        )


def beat_holds_row_locks(engine, pid: int, tables: tuple[str, ...]) -> bool:
    """Does the beat process `pid` hold row locks in any of `tables` (pgrowlocks)? A beat inside
    a transaction may hold only a table lock (a plain read); this says it holds rows."""
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pgrowlocks"))
        return any(
            connection.execute(
                text(
                    "SELECT 1 FROM pgrowlocks(:table) AS locks, pg_stat_activity AS activity"
                    " WHERE activity.application_name = :name AND activity.pid = ANY(locks.pids)"
                ),
                {"table": table, "name": f"erp-beat:{pid}"},
            ).first()
            for table in tables
        )


def ledger_rows(engine, name_prefix: str) -> list:
    """The run ledger's rows of the periodic tasks whose name starts with `name_prefix`."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT * FROM periodic_task_runs WHERE periodic_task_name LIKE :prefix ORDER BY scheduled_at, id"
                ),
                {"prefix": name_prefix.replace("%", r"\%") + "%"},
            )
        )


def kill_beat_between_transactions(engine, process, attempts: int = 200) -> None:
    """SIGKILL a beat while it is outside any transaction, so it cannot die between publishing a
    batch and committing it (a window that sends the batch twice, which the worker's guard drops,
    and which tests/integration/test_run_ledger.py's chaos test covers on purpose).

    The beat is stopped first, then asked about: stopped inside a transaction, it is let go on
    and tried again a moment later."""
    pid = process.process.pid
    for _ in range(attempts):
        os.killpg(pid, signal.SIGSTOP)
        with engine.connect() as connection:
            busy = connection.execute(
                text(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = :name AND datname = current_database()"
                    " AND (state LIKE 'idle in transaction%' OR state = 'active')"
                ),
                {"name": f"erp-beat:{pid}"},
            ).scalar()
        if not busy:
            process.stop(signal.SIGKILL)
            return
        os.killpg(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"beat {pid} was inside a transaction every time it was stopped")
