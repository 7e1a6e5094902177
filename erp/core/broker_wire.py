"""What kombu's Redis transport writes, and the headers erp's own messages carry, in one place.

kombu stores a message as a JSON envelope (`envelope`) in a Redis list named after the queue;
a queue with priorities has sibling lists, one per priority step (`queue_keys`); a message a
worker has reserved but not acknowledged sits in the `unacked` hash (`UNACKED_HASH`); events go
over pub/sub on a channel derived from the database number and the exchange (`event_channel`).
The async publisher (erp.core.broker) writes these structures and the scheduler reads them;
nothing else in erp knows them. tests/integration/test_broker.py compares the result with what
kombu itself writes.

The headers of erp's own travel in a task message beside Celery's: a periodic run carries its
schedule's name and its slot (beat and "run now" write them; the worker's run guard, its log
context and the lateness figure read them), and a task queued inside a request or a task
carries that request's id into the worker's log lines. Every message erp publishes (the async
publisher, beat's batch publisher and kombu, through Celery's `before_task_publish`) carries the
moment it was queued: neither Celery's protocol nor kombu's envelope records one, and the age of
the oldest message waiting in a queue (the console's health strip, `/metrics`) is read from it.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from celery.events import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.compression import compress
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.json import dumps
from redis.exceptions import RedisError

BODY_ENCODING = "base64"
CONTENT_TYPE = "application/json"
# kombu's delivery modes: 2 (persistent) for tasks, 1 (transient) for events.
PERSISTENT, TRANSIENT = 2, 1
EVENT_EXCHANGE = "celeryev"
# Reserved (prefetched, not yet acknowledged) messages, keyed by delivery tag.
UNACKED_HASH = "unacked"
# kombu's default priority steps and the separator it puts between queue name and step.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"

# Message headers of erp's own (see the module docstring).
PERIODIC_NAME_HEADER = "periodic_task_name"
PERIODIC_SCHEDULED_AT_HEADER = "periodic_task_scheduled_at"
REQUEST_ID_HEADER = "request_id"
# When the message was queued, as seconds since the epoch by the publisher's clock.
PUBLISHED_AT_HEADER = "published_at"

# What a slow, missing or failing Redis raises, through kombu (OperationalError) or redis-py;
# timeouts, asyncio's included, are OSErrors.
BROKER_ERRORS: tuple[type[Exception], ...] = (KombuOperationalError, RedisError, OSError)


def envelope(
    body: Any,
    headers: dict[str, Any],
    properties: dict[str, Any],
    *,
    exchange: str,
    routing_key: str,
    delivery_mode: int,
    priority: int = 0,
    compression: str | None = None,
) -> str:
    """A message as kombu's Redis transport stores it.

    With `compression` (a kombu compression name, e.g. "gzip"), the serialized body is
    compressed and, as kombu's producer does, `headers` gets the `compression` header naming it.
    """
    payload = dumps(body).encode()
    if compression:
        payload, headers["compression"] = compress(payload, compression)
    return envelope_of_payload(
        base64.b64encode(payload).decode(),
        headers,
        properties,
        exchange=exchange,
        routing_key=routing_key,
        delivery_mode=delivery_mode,
        priority=priority,
    )


def encoded_body(body: Any) -> str:
    """A body serialized and base64-encoded, uncompressed, as `envelope` stores it: made once
    for many messages with the same body (`envelope_of_payload`)."""
    return base64.b64encode(dumps(body).encode()).decode()


def envelope_of_payload(
    payload: str,
    headers: dict[str, Any],
    properties: dict[str, Any],
    *,
    exchange: str,
    routing_key: str,
    delivery_mode: int,
    priority: int = 0,
) -> str:
    """`envelope` around a body already serialized and encoded (`encoded_body`)."""
    message: str = dumps(
        {
            "body": payload,
            "content-encoding": "utf-8",
            "content-type": CONTENT_TYPE,
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": delivery_mode,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": priority,
                "body_encoding": BODY_ENCODING,
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
    return message


def queue_keys(queue: str) -> tuple[str, ...]:
    """Every Redis list holding messages of `queue`: the plain list, then one per priority step."""
    return (queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS if step))


def event_channel(db: int, routing_key: str) -> str:
    """The pub/sub channel of the fanout event exchange for one routing key (e.g. task.sent)."""
    return f"/{db}.{EVENT_EXCHANGE}/{routing_key}"


@dataclass(frozen=True)
class EventSource:
    """Who sends an event, as Celery's event dispatcher names it: found once for a batch of
    events (found anew for each, the host's name and the zone's offset were 3 % of a herd's time)."""

    hostname: str
    utcoffset: int
    pid: int

    @classmethod
    def here(cls) -> EventSource:
        # What Celery's own event dispatcher calls this process.
        return cls(anon_nodename(), utcoffset(), os.getpid())


def task_sent_event(fields: dict[str, Any], clock: int, source: EventSource | None = None) -> str:
    """A task-sent event as Celery's event dispatcher publishes it (Flower, `celery events`)."""
    source = source or EventSource.here()
    event = Event(
        "task-sent", hostname=source.hostname, utcoffset=source.utcoffset, pid=source.pid, clock=clock, **fields
    )
    return envelope(
        event,
        {"hostname": source.hostname},
        {},
        exchange=EVENT_EXCHANGE,
        routing_key="task.sent",
        delivery_mode=TRANSIENT,
    )


def published_at(message: str | bytes | None) -> float | None:
    """When a stored message was queued (its `published_at` header); None for a message
    without one (queued by another producer or an older release) or one that cannot be read."""
    if not message:
        return None
    try:
        value = json.loads(message).get("headers", {}).get(PUBLISHED_AT_HEADER)
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
