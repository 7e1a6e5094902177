"""Which workers are alive: each worker's main process writes its heartbeat to PostgreSQL.

A periodic run in the ledger names the process that started it (`worker`: node name and pid).
When that process is gone (its worker was killed, its host lost), the run will never finish
there; its message, unacknowledged, would come back only after Redis's visibility timeout
(twice the hard time limit, 12 minutes by default), or never, if Redis lost it. So every worker
writes, every HEARTBEAT_EVERY_SECONDS, its node name and the pids of the processes that run its
tasks (erp.tasks.worker.heartbeat); beat (erp.tasks.beat.recovery) runs again whatever a
vanished process had started, and the run guard (erp.tasks.worker.run_guard) lets a
redelivered message take over such a run. This module is what both read.

A process is gone when its node's heartbeat is older than WORKER_LOST_AFTER_SECONDS, or when
a heartbeat written after the run started no longer lists it (a pool child that was killed
and replaced). The heartbeat is in PostgreSQL, not Redis, because it must outlive a Redis
restart, which is exactly when runs are lost.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, DateTime, String, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from erp.core.db import Base

HEARTBEAT_EVERY_SECONDS = 5.0


class WorkerHeartbeatDB(Base):
    """One row per running worker (its Celery node name), written by its main process."""

    __tablename__ = "worker_heartbeats"

    node: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The processes that run this worker's tasks: its pool's children (or itself, solo).
    pids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


async def fresh_worker_nodes(lost_after_seconds: float, *, session: AsyncSession) -> list[str]:
    """The workers whose heartbeat is younger than `lost_after_seconds` (by the database's clock)."""
    rows = await session.scalars(
        select(WorkerHeartbeatDB.node)
        .where(WorkerHeartbeatDB.seen_at > func.now() - timedelta(seconds=lost_after_seconds))
        .order_by(WorkerHeartbeatDB.node)
    )
    return list(rows)


WRITE_HEARTBEAT = text(
    """
    INSERT INTO worker_heartbeats (node, pids, started_at, seen_at)
    VALUES (:node, CAST(:pids AS bigint[]), :started_at, now())
    ON CONFLICT (node) DO UPDATE SET pids = EXCLUDED.pids, started_at = EXCLUDED.started_at, seen_at = now()
    """
)

# The process named by a run's `worker` ("node:pid") is gone: no fresh heartbeat of its node,
# or a heartbeat written after the run started that no longer lists the pid. Used by beat in
# SQL, over many runs at once; `r` is the periodic_task_runs row.
WORKER_GONE_SQL = """
    NOT EXISTS (
        SELECT 1 FROM worker_heartbeats AS h
        WHERE h.node = regexp_replace(r.worker, ':[0-9]+$', '')
          AND h.seen_at > now() - make_interval(secs => :lost_after)
          AND (h.seen_at <= r.started_at
               OR substring(r.worker FROM ':([0-9]+)$')::bigint = ANY(h.pids))
    )
"""


def split_worker(worker: str) -> tuple[str, int | None]:
    """A run's `worker` ("celery@host:1234") as its node name and pid."""
    node, _, pid = worker.rpartition(":")
    return (node, int(pid)) if node and pid.isdigit() else (worker, None)


def process_is_gone(
    connection: Connection, worker: str, started_at: datetime | None, *, here: str, lost_after: float
) -> bool:
    """Is the process that started a run gone? `here` is the asking worker's node name.

    A process of this node is asked directly (a pool child killed a moment ago is not in the
    heartbeat yet); one of another node by its heartbeat.
    """
    node, pid = split_worker(worker)
    if pid is None:
        return True
    if node == here:
        return not _pid_alive(pid)
    row = connection.execute(
        text(
            "SELECT seen_at > now() - make_interval(secs => :lost_after) AS fresh, seen_at, :pid = ANY(pids) AS listed"
            " FROM worker_heartbeats WHERE node = :node"
        ),
        {"node": node, "pid": pid, "lost_after": lost_after},
    ).first()
    if row is None or not row.fresh:
        return True
    return bool(started_at is not None and row.seen_at > started_at and not row.listed)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
