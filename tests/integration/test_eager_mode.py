"""Eager mode (CELERY_TASK_ALWAYS_EAGER): a task runs in the process that queues it, at once.

Against the real PostgreSQL and Redis, with no worker: from an endpoint (dispatch publishes with
redis.asyncio, not apply_async), from synchronous code, from inside a running event loop, and
from inside a service, each with a fresh session of its own, its result in the result backend
where the status endpoint reads it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from celery.result import AsyncResult

from erp.core import broker
from erp.core.celery_app import celery_app
from erp.features.ping.tasks import ping
from tests.support import eager_tasks
from tests.support.bridge_tasks import probe_values


@pytest.fixture
def eager(erp_eager):
    """The test kit's eager app (erp.testing)."""
    return erp_eager


def stored(task_id: str) -> AsyncResult:
    """The task's result as the status endpoint reads it: from the result backend."""
    return AsyncResult(task_id, app=celery_app)


def test_a_task_dispatched_from_an_endpoint_has_run_when_the_answer_comes(eager, api_client, make_user):
    user = make_user()
    accepted = api_client.post("/api/v1/tasks/ping", headers=user.headers)
    assert accepted.status_code == 202, accepted.text
    status = api_client.get(accepted.json()["status_url"], headers=user.headers).json()
    assert status["state"] == "SUCCESS", status
    assert status["result"]["pong"] is True
    assert status["task_name"] == "erp.ping"


def test_delay_from_synchronous_code_runs_at_once_and_stores_the_result(eager, probe_table, sync_engine):
    result = eager_tasks.record_task.delay("sync")
    assert result.get(timeout=10) == ["sync"]
    assert stored(result.id).state == "SUCCESS"
    assert stored(result.id).result == ["sync"]


def test_delay_from_inside_a_running_event_loop_runs_on_the_bridge_loop(eager, probe_table, sync_engine):
    async def endpoint_like() -> str:
        # A synchronous call inside async code: the caller's loop must neither nest nor deadlock.
        return str(eager_tasks.record_task.delay("in-loop").id)

    task_id = asyncio.run(endpoint_like())
    assert stored(task_id).state == "SUCCESS", stored(task_id).result
    assert stored(task_id).result == ["in-loop"]


def test_send_task_awaited_on_the_event_loop_runs_the_task(eager, probe_table, sync_engine):
    task_id = str(uuid.uuid4())
    asyncio.run(broker.send_task(eager_tasks.record_task, ("awaited",), {}, task_id))
    assert stored(task_id).state == "SUCCESS", stored(task_id).result
    assert probe_values(sync_engine) == ["awaited"]


def test_send_task_refuses_arguments_the_task_does_not_take_before_running_it(eager, probe_table, sync_engine):
    with pytest.raises(TypeError):
        asyncio.run(broker.send_task(eager_tasks.record_task, ("a", "b"), {}, str(uuid.uuid4())))
    assert probe_values(sync_engine) == []


def test_a_task_queued_inside_a_service_runs_after_that_service_committed(eager, probe_table, sync_engine):
    """Not nested: the queued task gets a session of its own once the service's has ended."""
    outer = eager_tasks.queue_from_a_service_task.delay("outer")
    inner_id = outer.get(timeout=10)
    assert stored(outer.id).state == "SUCCESS", stored(outer.id).result
    inner = stored(inner_id)
    assert inner.state == "SUCCESS", inner.result
    # It saw what the service had committed before it, and wrote its own row after.
    assert inner.result == ["outer", "outer:queued"]
    assert probe_values(sync_engine) == ["outer", "outer:queued"]


def test_an_async_def_task_runs_eagerly_in_a_session_committed_when_it_returns(eager, probe_table, sync_engine):
    async def caller() -> str:
        return str(eager_tasks.async_record_task.delay("async").id)

    task_id = asyncio.run(caller())
    assert stored(task_id).state == "SUCCESS", stored(task_id).result
    assert stored(task_id).result == {"value": "async", "task_id": task_id}
    assert probe_values(sync_engine) == ["async"]


def test_a_failing_task_rolls_its_session_back_and_stores_its_error(eager, probe_table, sync_engine):
    result = eager_tasks.failing_task.delay("rolled-back")
    assert stored(result.id).state == "FAILURE"
    assert isinstance(stored(result.id).result, ValueError)
    assert probe_values(sync_engine) == []


def test_ping_runs_in_this_process(eager):
    import os

    assert ping.delay().get(timeout=10)["worker_pid"] == os.getpid()


def test_a_task_queued_by_a_service_that_then_fails_still_runs_as_a_sent_message_would(eager, probe_table, sync_engine):
    queued_id = str(uuid.uuid4())
    outer = eager_tasks.queue_then_fail_task.delay(queued_id)
    assert outer.state == "FAILURE"
    # The service's row was rolled back before the queued task ran; the task's own is kept.
    assert stored(queued_id).state == "SUCCESS", stored(queued_id).result
    assert stored(queued_id).result == [f"{queued_id}:queued"]
    assert probe_values(sync_engine) == [f"{queued_id}:queued"]


def test_tasks_dispatched_side_by_side_run_one_at_a_time_on_the_bridges_two_connections(
    eager, probe_table, sync_engine
):
    task_ids = [str(uuid.uuid4()) for _ in range(6)]

    async def many() -> None:
        await asyncio.gather(
            *(broker.send_task(eager_tasks.record_task, (f"v{n}",), {}, task_id) for n, task_id in enumerate(task_ids))
        )

    asyncio.run(many())
    assert [stored(task_id).state for task_id in task_ids] == ["SUCCESS"] * 6
    assert sorted(probe_values(sync_engine)) == [f"v{n}" for n in range(6)]
