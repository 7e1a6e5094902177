"""`async def` tasks on a real worker (the test kit's, in this process) and in eager mode: the
session handed in is committed when the task returns and rolled back when it raises or retries."""

from __future__ import annotations

import pytest

from tests.support import eager_tasks
from tests.support.bridge_tasks import probe_values


def test_on_a_worker_the_session_is_committed_when_the_task_returns(erp_worker, probe_table, sync_engine):
    result = eager_tasks.async_record_task.delay("on a worker")
    assert result.get(timeout=30) == {"value": "on a worker", "task_id": result.id}
    assert probe_values(sync_engine) == ["on a worker"]


def test_on_a_worker_a_failing_task_rolls_its_work_back(erp_worker, probe_table, sync_engine):
    with pytest.raises(ValueError, match="failing after inserting"):
        eager_tasks.async_failing_task.delay("rolled back").get(timeout=30)
    assert probe_values(sync_engine) == []


@pytest.mark.parametrize("where", ["worker", "eager"])
def test_a_retry_rolls_the_attempt_back_and_runs_again_in_a_new_session(where, request, probe_table, sync_engine):
    request.getfixturevalue("erp_worker" if where == "worker" else "erp_eager")
    result = eager_tasks.async_retry_once_task.delay(where)
    assert result.get(timeout=30) == [f"{where}:1"]
    assert probe_values(sync_engine) == [f"{where}:1"]
