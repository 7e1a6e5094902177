"""Beat's batch publisher writes what kombu's `send_task` writes, on the real Redis, for every
message of a batch: it builds one message per task, arguments and expiry and fills in each
message's id, so a template must never leak one message's id, arguments or headers into another.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid

from celery.result import denied_join_result

from erp.core.batch_publisher import BatchPublisher, OutgoingTask
from erp.core.broker_wire import event_channel
from erp.core.celery_app import celery_app
from tests.support.scheduling import wait_for

QUEUE = "celery"


def popped(client) -> list[dict]:
    """Every message of the queue, oldest first, with its body decoded."""
    messages = []
    while (raw := client.rpop(QUEUE)) is not None:
        message = json.loads(raw)
        message["body"] = json.loads(base64.b64decode(message["body"]))
        messages.append(message)
    return messages


def without_what_differs(message: dict) -> dict:
    """The message but for what differs for each message sent (its delivery tag, when it was
    queued, the sending thread's reply queue) and its id, returned beside it."""
    message["headers"].pop("published_at")
    message["properties"].pop("delivery_tag")
    message["properties"].pop("reply_to")
    return message


def ids_of(message: dict) -> tuple[str, str, str]:
    headers, properties = message["headers"], message["properties"]
    return headers.pop("id"), headers.pop("root_id"), properties.pop("correlation_id")


def test_each_message_of_a_batch_is_the_one_send_task_writes(broker_client):
    tasks = [
        OutgoingTask("erp.ping", str(uuid.uuid4()), [1, "two"], {"three": [3]}, headers={"periodic_task_name": "a"}),
        OutgoingTask("erp.ping", str(uuid.uuid4()), [1, "two"], {"three": [3]}, headers={"periodic_task_name": "b"}),
        OutgoingTask("erp.ping", str(uuid.uuid4()), [4], {}, headers={"periodic_task_name": "c"}),
        OutgoingTask("erp.ping", str(uuid.uuid4()), [4], {}, expires_seconds=60.0),
    ]
    BatchPublisher(celery_app, broker_client).publish(tasks)
    ours = popped(broker_client)
    with denied_join_result():
        for task in tasks:
            celery_app.send_task(
                task.task_name,
                args=task.args,
                kwargs=task.kwargs,
                task_id=task.task_id,
                headers=task.headers,
                **task.send_task_options(),
            )
    kombus = popped(broker_client)

    assert len(ours) == len(kombus) == len(tasks), "queued in the order published"
    for task, sent, expected in zip(tasks, ours, kombus, strict=True):
        assert ids_of(sent) == ids_of(expected) == (task.task_id,) * 3
        sent, expected = without_what_differs(sent), without_what_differs(expected)
        if task.expires_seconds is not None:
            # Counted from each publish's own clock: a few milliseconds apart.
            assert sent["headers"].pop("expires")[:16] == expected["headers"].pop("expires")[:16]
        assert sent == expected
        assert sent["body"][:2] == [task.args, task.kwargs]


def test_each_sent_event_names_its_own_message(broker_client):
    subscriber = broker_client.pubsub()
    db = broker_client.connection_pool.connection_kwargs.get("db", 0)
    subscriber.subscribe(event_channel(int(db), "task.sent"))
    wait_for(lambda: subscriber.get_message(timeout=0.1) is not None, message="subscribed")
    events: list[dict] = []

    def collect() -> None:
        while len(events) < 3 and (message := subscriber.get_message(timeout=5)) is not None:
            if message["type"] == "message":
                events.append(json.loads(base64.b64decode(json.loads(message["data"])["body"])))

    collector = threading.Thread(target=collect)
    collector.start()
    tasks = [OutgoingTask("erp.ping", str(uuid.uuid4()), [], {}) for _ in range(3)]
    BatchPublisher(celery_app, broker_client).publish(tasks)
    collector.join(10)
    subscriber.close()

    assert [(event["uuid"], event["root_id"]) for event in events] == [(task.task_id,) * 2 for task in tasks]
    assert all(event["type"] == "task-sent" and event["queue"] == QUEUE for event in events)
