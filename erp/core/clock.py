"""The time services read: `utcnow()`, timezone-aware UTC.

One function, so a reader finds where a service's "now" comes from, and a test that needs to
move time moves it here. (Beat and the calendar take `now` as an argument instead.)
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
