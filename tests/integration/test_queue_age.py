"""The age of the oldest message in each queue, on the real Redis: every publishing path stamps
its messages, and the console, `/metrics` and the health check read the same figure."""

from __future__ import annotations

import json
import time
import uuid

import redis

from erp.core import broker as async_broker
from erp.core import broker_wire
from erp.core.batch_publisher import BatchPublisher, OutgoingTask
from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from erp.features.ping.tasks import ping
from erp.tasks.periodic_health_checks import check_queues

QUEUE = "celery"


def stats(api_client, *queues: str) -> dict[str, async_broker.QueueStats]:
    """`queue_stats` on the app's event loop, where the web process's Redis pool lives."""
    return api_client.portal.call(async_broker.queue_stats, list(queues) or [QUEUE])


def stamps(client: redis.Redis, key: str = QUEUE) -> list[float | None]:
    return [broker_wire.published_at(message) for message in reversed(client.lrange(key, 0, -1))]


def test_every_publishing_path_stamps_when_it_queued(api_client, broker_client):
    before = time.time()
    api_client.portal.call(async_broker.send_task, ping, (), {}, str(uuid.uuid4()))
    ping.apply_async(task_id=str(uuid.uuid4()))
    BatchPublisher(celery_app, broker_client).publish(
        [OutgoingTask(task_name="erp.ping", task_id=str(uuid.uuid4()), args=[], kwargs={})]
    )
    after = time.time()
    first, second, third = stamps(broker_client)
    assert first is not None and second is not None and third is not None
    assert before <= first <= second <= third <= after


def test_the_oldest_message_of_a_queue_is_its_lists_oldest_tail(api_client, broker_client):
    assert stats(api_client)[QUEUE] == async_broker.QueueStats(0, None)
    ping.apply_async(task_id=str(uuid.uuid4()))
    queued_at = time.time()
    time.sleep(1.2)
    ping.apply_async(task_id=str(uuid.uuid4()))
    # A message with priority waits in a list of its own; an older one there is the queue's oldest.
    message = json.loads(broker_client.lindex(QUEUE, 0))
    message["headers"][broker_wire.PUBLISHED_AT_HEADER] = queued_at - 30
    broker_client.lpush(broker_wire.queue_keys(QUEUE)[2], json.dumps(message))

    read_at = time.time()
    answer = stats(api_client)[QUEUE]
    assert answer.depth == 3
    assert answer.oldest_age_seconds is not None
    assert 30 <= answer.oldest_age_seconds <= time.time() - queued_at + 30
    broker_client.delete(broker_wire.queue_keys(QUEUE)[2])
    answer = stats(api_client)[QUEUE]
    assert answer.depth == 2
    assert answer.oldest_age_seconds is not None and read_at - queued_at <= answer.oldest_age_seconds < 30


def test_a_message_without_the_stamp_has_no_age(api_client, broker_client):
    message = json.loads(broker_wire.envelope({}, {}, {}, exchange="", routing_key=QUEUE, delivery_mode=2))
    broker_client.lpush(QUEUE, json.dumps(message), b"not json at all")
    assert stats(api_client)[QUEUE] == async_broker.QueueStats(2, None)


def test_metrics_and_the_health_check_show_the_age(api_client, broker_client, monkeypatch):
    ping.apply_async(task_id=str(uuid.uuid4()))
    time.sleep(1.1)
    monkeypatch.setenv("ERP_ENVIRONMENT", "development")
    get_settings.cache_clear()
    try:
        text = api_client.get("/metrics").text
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    line = next(line for line in text.splitlines() if line.startswith("erp_queue_oldest_message_age_seconds{"))
    assert 'queue_name="celery"' in line and float(line.split()[-1]) >= 1.0

    result = api_client.portal.call(check_queues)
    assert result["depths"][QUEUE] == 1 and result["oldest_age_seconds"][QUEUE] >= 1.0
