"""A header added by a `before_task_publish` receiver reaches the task, through a real worker.

Its own module: the in-process worker consumes the default queue for the rest of the module,
which test_broker.py reads itself.
"""

from __future__ import annotations

import uuid

import pytest
from celery import signals
from celery.result import AsyncResult

from erp.core import broker as async_broker
from erp.core.celery_app import celery_app


@celery_app.task(name="tests.trace_id_of_request", bind=True)
def trace_id_of_request(self):
    # A message header Celery does not know becomes an attribute of the task's request.
    return getattr(self.request, "x-trace-id", None)


@pytest.fixture
def tracing_receiver():
    def add_trace_header(sender=None, headers=None, **_):
        headers["x-trace-id"] = f"trace-{headers['id']}"

    signals.before_task_publish.connect(add_trace_header, weak=False)
    yield
    signals.before_task_publish.disconnect(add_trace_header)


def test_the_task_sees_the_header_a_receiver_added(api_client, tracing_receiver, in_process_worker):
    task_id = str(uuid.uuid4())
    api_client.portal.call(async_broker.send_task, trace_id_of_request, (), {}, task_id)
    assert AsyncResult(task_id, app=celery_app).get(timeout=20) == f"trace-{task_id}"
