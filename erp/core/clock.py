"""The time services read: `utcnow()`, timezone-aware UTC.

One function, so a reader finds where a service's "now" comes from, and a test that needs to
move time moves it here, with `time_source`: services import `utcnow` by name, so replacing the
function in this module would not reach them; the source it reads can be. (Beat and the
calendar take `now` as an argument instead.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

# What utcnow() reads; None: the system clock.
_source: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    return datetime.now(UTC) if _source is None else _source()


@contextlib.contextmanager
def time_source(source: Callable[[], datetime]) -> Iterator[None]:
    """While entered, `utcnow()` returns `source()` in every thread (the web's loop, the bridge's).

    For tests only: a process-wide setting, as the clock it replaces is. `source` must return
    aware datetimes, as utcnow does.
    """
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
