"""Beat's heartbeat: every beat writes its instance and last tick to `beat_heartbeats`.

`/health/beat`, `/metrics` and the periodic health check read it; a beat whose row has not
moved for `stale_after_seconds` (erp.tasks.scheduler_models, beside the table) is not ticking.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.dialects.postgresql import insert

from erp.tasks.scheduler_models import HEARTBEAT_EVERY_SECONDS, BeatHeartbeatDB

# Rows of beats that stopped this long ago tell nobody anything.
FORGET_AFTER = timedelta(days=1)


class Heartbeat:
    """Counts the runs a beat sent and writes them with its tick, at most every few seconds."""

    def __init__(self, instance: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.instance = instance
        self.started_at = datetime.now(UTC)
        self.unreported_runs = 0
        self._clock = clock
        self._last_written: float | None = None

    def count_sent(self, runs: int) -> None:
        self.unreported_runs += runs

    def due(self) -> bool:
        return self._last_written is None or self._clock() - self._last_written >= HEARTBEAT_EVERY_SECONDS

    def record(self, engine: Engine) -> None:
        """Write the heartbeat if one is due (one short transaction)."""
        if not self.due():
            return
        now = datetime.now(UTC)
        with engine.begin() as connection:
            connection.execute(
                insert(BeatHeartbeatDB)
                .values(
                    instance=self.instance,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=self.started_at,
                    last_tick_at=now,
                    runs_sent=self.unreported_runs,
                )
                .on_conflict_do_update(
                    index_elements=["instance"],
                    set_={"last_tick_at": now, "runs_sent": BeatHeartbeatDB.runs_sent + self.unreported_runs},
                )
            )
            connection.execute(delete(BeatHeartbeatDB).where(BeatHeartbeatDB.last_tick_at < now - FORGET_AFTER))
        self.unreported_runs = 0
        self._last_written = self._clock()
