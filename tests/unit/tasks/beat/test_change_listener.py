"""The change listener falls back to sleeping when it cannot listen."""

from __future__ import annotations

from erp.tasks.beat.change_listener import ChangeListener


class BrokenEngine:
    def __init__(self) -> None:
        self.attempts = 0

    def raw_connection(self):
        self.attempts += 1
        raise ConnectionError("PostgreSQL is away")


def test_a_failing_listener_sleeps_the_whole_wait_and_retries_next_time():
    slept: list[float] = []
    engine = BrokenEngine()
    listener = ChangeListener(engine, sleep=slept.append)  # type: ignore[arg-type]
    assert listener.wait(1.5) is False
    assert listener.wait(0.5) is False
    assert slept == [1.5, 0.5] and engine.attempts == 2


def test_no_wait_needs_no_connection():
    engine = BrokenEngine()
    assert ChangeListener(engine).wait(0) is False  # type: ignore[arg-type]
    assert engine.attempts == 0
