"""The test kit's clock, and the source erp.core.clock reads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from erp.core import clock
from erp.testing.clock import ControllableClock

START = datetime(2031, 1, 15, 9, 0, tzinfo=UTC)


def test_it_stands_still_until_moved():
    controllable = ControllableClock(START)
    assert controllable.now() == controllable.now() == START
    assert controllable.advance(seconds=90) == START + timedelta(seconds=90)
    assert controllable.advance(timedelta(days=1)) == START + timedelta(days=1, seconds=90)
    controllable.set(START - timedelta(hours=1))
    assert controllable.now() == START - timedelta(hours=1)


def test_it_keeps_aware_datetimes_and_does_not_go_back():
    with pytest.raises(ValueError, match="aware"):
        ControllableClock(datetime(2031, 1, 15))
    controllable = ControllableClock(datetime(2031, 1, 15, tzinfo=timezone(timedelta(hours=2))))
    with pytest.raises(ValueError, match="aware"):
        controllable.set(datetime(2031, 1, 15))
    with pytest.raises(ValueError, match="does not go back"):
        controllable.advance(seconds=-1)


def test_utcnow_reads_the_source_in_every_thread_while_it_is_entered():
    controllable = ControllableClock(START)
    seen: list[datetime] = []
    with clock.time_source(controllable.now):
        assert clock.utcnow() == START
        thread = threading.Thread(target=lambda: seen.append(clock.utcnow()))
        thread.start()
        thread.join()
    assert seen == [START]
    assert abs(clock.utcnow() - datetime.now(UTC)) < timedelta(seconds=5), "the system clock again"
