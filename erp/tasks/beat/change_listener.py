"""Waking beat when a schedule changes: LISTEN on the channel the tables' triggers NOTIFY.

The listener is only a shortcut: without it beat still looks at the table every
`CELERY_BEAT_DB_SCHEDULER_SYNC_EVERY_SECONDS`. Any failure of the listening connection falls
back to sleeping, and the next wait opens a new connection.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from select import select as wait_until_readable
from typing import Any

from sqlalchemy import Engine

from erp.core.db import SCHEDULE_CHANGES_CHANNEL

logger = logging.getLogger(__name__)


class ChangeListener:
    def __init__(self, engine: Engine, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._engine = engine
        self._sleep = sleep
        self._connection: Any = None  # a pooled DBAPI connection in autocommit, LISTENing

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a change notification woke us early."""
        if seconds <= 0:
            return False
        try:
            driver_connection = self._listening_connection()
            if wait_until_readable([driver_connection], [], [], seconds)[0]:
                driver_connection.poll()
                driver_connection.notifies.clear()
                return True
            return False
        except Exception as error:
            logger.warning(
                "beat: change listener failed (%s); polling every %.1f s instead",
                error,
                seconds,
                extra={"action": "listener_failed"},
            )
            self.close()
            self._sleep(seconds)
            return False

    def _listening_connection(self) -> Any:
        if self._connection is None:
            connection = self._engine.raw_connection()
            driver_connection: Any = connection.driver_connection  # psycopg2's own connection
            driver_connection.set_session(autocommit=True)
            driver_connection.cursor().execute(f"LISTEN {SCHEDULE_CHANGES_CHANNEL}")
            self._connection = connection
        return self._connection.driver_connection

    def close(self) -> None:
        if self._connection is not None:
            # Closing a broken connection may fail too.
            with contextlib.suppress(Exception):
                self._connection.invalidate()
            self._connection = None
