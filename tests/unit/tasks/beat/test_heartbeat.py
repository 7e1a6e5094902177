"""When beat writes its heartbeat, and when a beat counts as stale."""

from __future__ import annotations

from erp.tasks.beat.heartbeat import Heartbeat
from erp.tasks.scheduler_models import HEARTBEAT_EVERY_SECONDS, stale_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoEngine:
    """Heartbeat.record must not touch the database when no heartbeat is due."""

    def begin(self):  # pragma: no cover - reaching it fails the test
        raise AssertionError("wrote a heartbeat that was not due")


def test_the_first_heartbeat_is_due_then_only_every_few_seconds():
    clock = Clock()
    heartbeat = Heartbeat("host:1:abc", clock=clock)
    assert heartbeat.due()
    heartbeat._last_written = clock()
    assert not heartbeat.due()
    heartbeat.record(NoEngine())  # not due: no write
    clock.now += HEARTBEAT_EVERY_SECONDS
    assert heartbeat.due()


def test_sent_runs_accumulate_until_written():
    heartbeat = Heartbeat("host:1:abc")
    heartbeat.count_sent(3)
    heartbeat.count_sent(4)
    assert heartbeat.unreported_runs == 7


def test_a_beat_is_stale_after_three_missed_heartbeats_or_loop_intervals():
    assert stale_after_seconds(1.0) == 3 * HEARTBEAT_EVERY_SECONDS
    assert stale_after_seconds(60.0) == 180.0
