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
from celery import signals
from celery.events.state import State
from kombu.compression import decompress

from erp.core import broker as async_broker
from erp.core.celery_app import celery_app
from erp.features.ping.tasks import ping
from tests.support.scheduling import wait_for

QUEUE = "celery"


def send(api_client, task, args: tuple = (), kwargs: dict | None = None) -> str:
    """`send_task` on the app's event loop, where the web process's Redis pool lives."""
    task_id = str(uuid.uuid4())
    api_client.portal.call(async_broker.send_task, task, args, kwargs or {}, task_id)
    return task_id


def pop_message(client: redis.Redis) -> dict:
    message = json.loads(client.rpop(QUEUE))
    body = base64.b64decode(message["body"])
    if "compression" in message["headers"]:
        body = decompress(body, message["headers"]["compression"])
    message["body"] = json.loads(body)
    return message


def assert_same_message(sent: dict, expected: dict, ours: str, kombus: str) -> None:
    """The two messages are equal but for what differs per message (ids, delivery tag, thread,
    when it was queued)."""
    assert sent["headers"].pop("published_at") > 0 and expected["headers"].pop("published_at") > 0
    assert sent["headers"].pop("id") == sent["headers"].pop("root_id") == ours
    assert expected["headers"].pop("id") == expected["headers"].pop("root_id") == kombus
    assert sent["properties"].pop("correlation_id") == ours
    expected["properties"].pop("correlation_id")
    assert sent["properties"].pop("delivery_tag") != expected["properties"].pop("delivery_tag")
    # Celery's id of the sending thread (for the rpc result backend); the portal is another thread.
    assert sent["properties"].pop("reply_to") and expected["properties"].pop("reply_to")
    assert sent == expected


def test_the_message_is_the_one_apply_async_writes(api_client, broker_client):
    ours = send(api_client, ping)
    ping.apply_async(task_id=(kombus := str(uuid.uuid4())))
    assert_same_message(pop_message(broker_client), pop_message(broker_client), ours, kombus)
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
    broker_db = broker_client.connection_pool.connection_kwargs.get("db", 0)
    killed = [c["id"] for c in broker_client.client_list() if c["name"] == "erp-web" and int(c["db"]) == broker_db]
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


@pytest.fixture
def publish_signals():
    """Receivers of both publish signals, recording their arguments; the first adds a trace header."""
    calls: dict[str, list[dict]] = {"before": [], "after": []}

    def before(sender=None, **arguments):
        arguments["headers"]["x-trace-id"] = f"trace-{arguments['headers']['id']}"
        calls["before"].append({"sender": sender, **arguments})

    def after(sender=None, **arguments):
        calls["after"].append({"sender": sender, **arguments})

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    yield calls
    signals.before_task_publish.disconnect(before)
    signals.after_task_publish.disconnect(after)


def test_publish_signals_fire_as_for_apply_async_and_a_header_a_receiver_adds_travels(
    api_client, broker_client, publish_signals
):
    ours = send(api_client, ping)
    ping.apply_async(task_id=(kombus := str(uuid.uuid4())))

    for moment in ("before", "after"):
        sent, expected = publish_signals[moment]
        assert sent.keys() == expected.keys()
        assert sent["headers"]["id"] == ours and expected["headers"]["id"] == kombus
        for name in sent.keys() - {"headers", "properties", "declare", "signal"}:
            assert sent[name] == expected[name], (moment, name)
    before_sent, before_expected = publish_signals["before"]
    assert [queue.name for queue in before_sent["declare"]] == [q.name for q in before_expected["declare"]]
    assert before_sent["properties"].keys() == before_expected["properties"].keys()
    assert before_sent["exchange"] == "" and before_sent["routing_key"] == QUEUE and before_sent["sender"] == "erp.ping"

    sent, expected = pop_message(broker_client), pop_message(broker_client)
    assert sent["headers"]["x-trace-id"] == f"trace-{ours}"
    assert expected["headers"]["x-trace-id"] == f"trace-{kombus}"
    sent["headers"].pop("x-trace-id"), expected["headers"].pop("x-trace-id")
    assert_same_message(sent, expected, ours, kombus)


@pytest.fixture
def conf_setting():
    """Set Celery settings for one test; the previous values come back after it."""
    saved: dict[str, object] = {}

    def set_(name: str, value: object) -> None:
        saved.setdefault(name, celery_app.conf[name])
        celery_app.conf[name] = value

    yield set_
    for name, value in saved.items():
        celery_app.conf[name] = value


def test_task_compression_is_honoured_like_apply_async(api_client, broker_client, conf_setting):
    conf_setting("task_compression", "gzip")
    ours = send(api_client, ping)
    # apply_async reads task_compression once, when its sender is first built: pass it explicitly.
    ping.apply_async(task_id=(kombus := str(uuid.uuid4())), compression="gzip")
    raw = json.loads(broker_client.lindex(QUEUE, -1))
    assert raw["headers"]["compression"] == "application/x-gzip"
    sent, expected = pop_message(broker_client), pop_message(broker_client)
    assert_same_message(sent, expected, ours, kombus)


def test_task_default_delivery_mode_is_honoured_like_apply_async(api_client, broker_client, conf_setting):
    conf_setting("task_default_delivery_mode", "transient")
    ours = send(api_client, ping)
    ping.apply_async(task_id=(kombus := str(uuid.uuid4())), delivery_mode="transient")
    sent, expected = pop_message(broker_client), pop_message(broker_client)
    assert sent["properties"]["delivery_mode"] == 1
    assert_same_message(sent, expected, ours, kombus)


def test_a_tasks_own_compression_and_delivery_mode_are_honoured(api_client, broker_client):
    task = celery_app.tasks["tests.compressed_transient"]
    ours = send(api_client, task)
    task.apply_async(task_id=(kombus := str(uuid.uuid4())))
    raw = json.loads(broker_client.lindex(QUEUE, -1))
    assert raw["headers"]["compression"] == "application/x-bz2" and raw["properties"]["delivery_mode"] == 1
    assert_same_message(pop_message(broker_client), pop_message(broker_client), ours, kombus)


@celery_app.task(name="tests.compressed_transient", compression="bzip2", delivery_mode="transient")
def compressed_transient():
    return None
