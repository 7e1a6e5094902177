"""A clock a test moves by hand, for what services read through `erp.core.clock.utcnow()`."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class ControllableClock:
    """Stands still until the test moves it: `set(moment)` or `advance(seconds=...)`.

    Read from any thread (the web's loop, the bridge's loop of an eager task), hence the lock.
    Beat and the calendar take `now` as an argument: pass them `clock.now()`.
    """

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = self._checked(start)

    @staticmethod
    def _checked(moment: datetime) -> datetime:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"the clock keeps aware datetimes, as utcnow() returns them; got {moment!r}")
        return moment

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = self._checked(moment)

    def advance(self, delta: timedelta | None = None, **units: float) -> datetime:
        """Move forward by `delta` or by `timedelta(**units)` (`seconds=90`, `days=1`); the new now."""
        step = delta if delta is not None else timedelta(**units)
        if step < timedelta(0):
            raise ValueError("the clock does not go back; set() it to an earlier moment instead")
        with self._lock:
            self._now += step
            return self._now
