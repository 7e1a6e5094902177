"""The worker's heartbeat: its main process writes it to PostgreSQL (see erp.tasks.worker_heartbeats).

Started when the worker is ready, in a daemon thread; removed at a warm shutdown, once the
running tasks have finished.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import Engine, text

from erp.core import worker_hooks
from erp.core.db import worker_sync_engine
from erp.core.errors import error_text
from erp.tasks.worker_heartbeats import HEARTBEAT_EVERY_SECONDS, WRITE_HEARTBEAT

logger = logging.getLogger(__name__)


class HeartbeatWriter:
    """A daemon thread in the worker's main process, writing its heartbeat until stopped."""

    def __init__(self, engine: Engine, node: str, pids: Any, started_at: datetime) -> None:
        self._engine = engine
        self._node = node
        self._pids = pids  # callable: the current pids
        self._started_at = started_at
        self._stopped = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="erp-worker-heartbeat", daemon=True)

    def start(self) -> None:
        self.write()
        self._thread.start()

    def write(self) -> None:
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    WRITE_HEARTBEAT, {"node": self._node, "pids": list(self._pids()), "started_at": self._started_at}
                )
        except Exception as error:  # PostgreSQL away: the next beat of the heart tries again
            if not self._failing:
                logger.warning(
                    "worker: heartbeat not written (%s); retrying every %.0f s",
                    error_text(error),
                    HEARTBEAT_EVERY_SECONDS,
                    extra={"action": "heartbeat_failed"},
                )
            self._failing = True
            return
        if self._failing:
            logger.info("worker: heartbeat written again", extra={"action": "heartbeat_resumed"})
        self._failing = False

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_EVERY_SECONDS):
            self.write()

    def stop(self) -> None:
        """At a warm shutdown: the runs still going finish; then the row goes."""
        self._stopped.set()
        try:
            with self._engine.begin() as connection:
                connection.execute(text("DELETE FROM worker_heartbeats WHERE node = :node"), {"node": self._node})
        except Exception:  # stale rows are harmless: they only say a worker is gone
            logger.info("worker: heartbeat row not removed at shutdown", extra={"action": "heartbeat_left"})


_heartbeat: HeartbeatWriter | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    node = getattr(sender, "hostname", None) or socket.gethostname()
    _heartbeat = HeartbeatWriter(worker_sync_engine(), node, _task_pids, datetime.now(UTC))
    _heartbeat.start()


def _task_pids() -> list[int]:
    return worker_hooks.pool_pids() or [os.getpid()]


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
