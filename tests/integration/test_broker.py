"""`erp.core.broker.send_task` writes what `apply_async` writes, on the real Redis.

The worker side (a message sent this way runs) is covered by the dispatch tests in
test_tasks_api.py and the end-to-end tests.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid

import pytest
import redis
from celery.events.state import State

from erp.core import broker as async_broker
from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from erp.features.ping.tasks import ping
from tests.support.scheduling import empty_broker, wait_for

QUEUE = "celery"


@pytest.fixture
def broker_client(redis_clean):
    empty_broker()
    client = redis.Redis.from_url(get_settings().broker_url)
    yield client
    client.close()


def send(api_client, task, args: tuple = (), kwargs: dict | None = None) -> str:
    """`send_task` on the app's event loop, where the web process's Redis pool lives."""
    task_id = str(uuid.uuid4())
    api_client.portal.call(async_broker.send_task, task, args, kwargs or {}, task_id)
    return task_id


def pop_message(client: redis.Redis) -> dict:
    message = json.loads(client.rpop(QUEUE))
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def test_the_message_is_the_one_apply_async_writes(api_client, broker_client):
    ours = send(api_client, ping)
    ping.apply_async(task_id=(kombus := str(uuid.uuid4())))
    sent, expected = pop_message(broker_client), pop_message(broker_client)

    assert sent["headers"].pop("id") == sent["headers"].pop("root_id") == ours
    assert expected["headers"].pop("id") == expected["headers"].pop("root_id") == kombus
    assert sent["properties"].pop("correlation_id") == ours
    expected["properties"].pop("correlation_id")
    assert sent["properties"].pop("delivery_tag") != expected["properties"].pop("delivery_tag")
    # Celery's id of the sending thread (for the rpc result backend); the portal is another thread.
    assert sent["properties"].pop("reply_to") and expected["properties"].pop("reply_to")
    assert sent == expected
    assert broker_client.llen(QUEUE) == 0


def test_arguments_and_time_limits_travel_like_apply_async(api_client, broker_client):
    limited = celery_app.tasks["tests.echo_with_limits"]
    send(api_client, limited, (1, "two"), {"three": [3]})
    limited.apply_async((1, "two"), {"three": [3]})
    sent, expected = pop_message(broker_client), pop_message(broker_client)
    assert sent["body"] == expected["body"] == [[1, "two"], {"three": [3]}, sent["body"][2]]
    assert sent["headers"]["timelimit"] == expected["headers"]["timelimit"] == [30, 20]
    assert sent["headers"]["argsrepr"] == expected["headers"]["argsrepr"]


def test_wrong_arguments_or_unsupported_options_send_nothing(api_client, broker_client):
    with pytest.raises(TypeError):
        send(api_client, ping, (1,))
    with pytest.raises(ValueError, match="cannot publish with priority"):
        send(api_client, celery_app.tasks["tests.prioritised"])
    assert broker_client.llen(QUEUE) == 0


def test_flower_and_celery_events_see_the_sent_event(api_client, broker_client):
    events: list[dict] = []
    with celery_app.connection_for_read() as connection:
        receiver = celery_app.events.Receiver(connection, handlers={"task-sent": events.append})
        listener = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": 15, "wakeup": False}, daemon=True
        )
        listener.start()
        sent_ids: set[str] = set()

        def ours_arrived():
            # Send until the listener has subscribed and seen one of ours: no sleep to guess when.
            sent_ids.add(send(api_client, ping))
            return next((event for event in events if event["uuid"] in sent_ids), None)

        event = wait_for(ours_arrived, timeout=10, interval=0.1, message="a task-sent event")
        receiver.should_stop = True
        listener.join(5)

    assert event["name"] == "erp.ping" and event["queue"] == QUEUE and event["pid"] > 0
    state = State()
    state.event(dict(event))
    assert state.tasks[event["uuid"]].name == "erp.ping" and state.tasks[event["uuid"]].sent is not None


def test_a_connection_cut_by_a_redis_restart_is_replaced(api_client, broker_client):
    send(api_client, ping)  # the pool now holds a connection
    killed = [c["id"] for c in broker_client.client_list() if c["name"] == "erp-web"]
    assert killed
    for client_id in killed:
        broker_client.client_kill_filter(_id=client_id)
    send(api_client, ping)
    assert broker_client.llen(QUEUE) == 2


@celery_app.task(name="tests.echo_with_limits", time_limit=30, soft_time_limit=20)
def echo_with_limits(*args, **kwargs):
    return args, kwargs


@celery_app.task(name="tests.prioritised", priority=5)
def prioritised():
    return None
