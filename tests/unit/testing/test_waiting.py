"""Waiting on a task's status URL: until a final state, or an error naming the last status."""

from __future__ import annotations

import pytest

from erp.testing.waiting import finished_task


class Answers:
    """A client whose GET answers the given statuses in turn, then the last one for ever."""

    def __init__(self, *states: str) -> None:
        self.states = list(states)
        self.asked: list[tuple[str, dict]] = []

    def get(self, url: str, *, headers: dict[str, str]) -> Answers:
        self.asked.append((url, headers))
        return self

    def json(self) -> dict:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"state": state}


def test_it_polls_until_the_task_has_finished():
    client = Answers("PENDING", "STARTED", "PROGRESS", "RETRY", "SUCCESS")
    status = finished_task(client, {"Authorization": "Bearer t"}, "/api/v1/tasks/x", interval=0)
    assert status == {"state": "SUCCESS"}
    assert client.asked == [("/api/v1/tasks/x", {"Authorization": "Bearer t"})] * 5


def test_a_task_that_does_not_finish_in_time_is_an_error_naming_its_last_state():
    with pytest.raises(AssertionError, match=r"did not finish within 0.05 s: \{'state': 'PROGRESS'\}"):
        finished_task(Answers("PROGRESS"), {}, "/api/v1/tasks/x", timeout=0.05, interval=0.01)
