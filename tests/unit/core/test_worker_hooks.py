"""What the worker notes around a task: log context and figures (no services; a stand-in task)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from erp.core import worker_hooks
from erp.core.logging import log_context


class RecordingClient:
    def __init__(self) -> None:
        self.commands: list[tuple[str, str, float]] = []

    def pipeline(self, transaction: bool) -> RecordingClient:
        return self

    def hincrby(self, key: str, field: str, amount: float) -> None:
        self.commands.append(("hincrby", field, amount))

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.commands.append(("hincrbyfloat", field, amount))

    def execute(self) -> None:
        pass


def periodic_task(client: RecordingClient, scheduled_at: datetime) -> SimpleNamespace:
    request = SimpleNamespace(
        periodic_task_name="nightly report",
        periodic_task_scheduled_at=scheduled_at.isoformat(),
        request_id=None,
        delivery_info={"routing_key": "reports"},
    )
    app = SimpleNamespace(conf=SimpleNamespace(task_default_queue="celery"), backend=SimpleNamespace(client=client))
    return SimpleNamespace(name="erp.report", request=request, app=app)


def test_a_periodic_run_is_logged_with_its_names_and_counted_with_its_lateness():
    client = RecordingClient()
    task = periodic_task(client, datetime.now(UTC) - timedelta(seconds=2))
    worker_hooks.task_started("t-1", task)
    assert dict(log_context()) == {"task_id": "t-1", "task_name": "erp.report", "periodic_task_name": "nightly report"}
    worker_hooks.task_finished("t-1", task, state="SUCCESS")
    assert dict(log_context()) == {}

    fields = {tuple(json.loads(field)[:2]): amount for _, field, amount in client.commands}
    assert fields[("celery_task_succeeded", "total")] == 1
    assert fields[("celery_task_runtime", "count")] == 1
    assert 2 <= fields[("erp_periodic_task_lateness_seconds", "sum")] < 10
    assert ("erp_periodic_task_lateness_seconds", "le=1") not in fields
    assert fields[("erp_periodic_task_lateness_seconds", "le=5")] == 1
    labels = {json.dumps(json.loads(field)[2], sort_keys=True) for _, field, _ in client.commands}
    assert json.dumps({"name": "erp.report", "queue_name": "reports"}, sort_keys=True) in labels


def test_a_failure_is_counted_with_its_exception_and_a_broken_redis_fails_nothing():
    client = RecordingClient()
    task = periodic_task(client, datetime.now(UTC))
    worker_hooks.task_started("t-2", task)
    worker_hooks.task_failed("t-2", exception=KeyError("x"))
    worker_hooks.task_finished("t-2", task, state="FAILURE")
    failed = [json.loads(field) for _, field, _ in client.commands if "celery_task_failed" in field]
    assert failed == [
        ["celery_task_failed", "total", {"exception": "KeyError", "name": "erp.report", "queue_name": "reports"}]
    ]

    task.app.backend.client = None  # no pipeline(): recording fails, the task does not
    worker_hooks.task_started("t-3", task)
    worker_hooks.task_finished("t-3", task, state="SUCCESS")
    assert dict(log_context()) == {}
