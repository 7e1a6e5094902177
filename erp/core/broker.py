"""Queueing tasks from the event loop: what API endpoints use instead of `apply_async`.

kombu's Redis transport blocks, so an async endpoint calling `apply_async` needs a thread per
publish, and under load those hand-offs plus kombu's per-publish set-up cost most of a
request (bench_api on one machine and run: 467 requests/s through a thread, 822 with this).
`send_task` writes the message `apply_async` would write (Celery's task protocol 2, built by
`celery_app.amqp`, in kombu's Redis envelope) and its task-sent event, with redis.asyncio, in
one round trip. Workers, Flower and `celery events` cannot tell the difference;
tests/integration/test_broker.py compares the two messages.

Like `apply_async`, it sends Celery's `before_task_publish` signal before writing (a receiver
may add headers, e.g. for tracing, and they travel in the message) and `after_task_publish`
after, with the arguments Celery gives them; it honours `task_compression` (and a task's or
route's `compression`) and `task_default_delivery_mode` (and a task's, route's or exchange's
`delivery_mode`). Receivers run on the event loop, as they run in the caller's thread with
`apply_async`: one that blocks holds up the web process.

It covers what dispatch needs: a task routed to a plain queue (Celery's default) at default
priority, JSON, no ETA. A task whose route or options ask for more is refused with a message
saying so; beat, the periodic-task "run now" and tasks that queue tasks publish through kombu.

In eager mode (`CELERY_TASK_ALWAYS_EAGER`) nothing is written: the task runs in this process,
in a thread beside the loop, and its result is stored as a worker's would be (erp.core.eager).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from celery import Task, signals
from kombu import Queue
from kombu.entity import maybe_delivery_mode

from erp.core import broker_wire, eager
from erp.core.celery_app import celery_app
from erp.core.config import get_settings

# Options a route or task may set that `send_task` passes on; any other is refused.
SUPPORTED_OPTIONS = {
    "queue",
    "serializer",
    "time_limit",
    "soft_time_limit",
    "ignore_result",
    "compression",
    "delivery_mode",
}
# Options that go into the task message itself (Celery's as_task_v2).
MESSAGE_OPTIONS = ("time_limit", "soft_time_limit", "ignore_result")


def connect(url: str) -> redis.Redis:
    """An asyncio Redis client for the web process.

    Connections are made on first use, on the loop that uses them. redis-py checks a pooled
    connection before reusing it, so one a Redis restart cut is replaced instead of failing the
    request; the timeouts keep a missing Redis from holding a request for long.
    """
    client: redis.Redis = redis.Redis.from_url(
        url,
        client_name="erp-web",
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=3,
    )
    return client


@functools.cache
def _broker() -> redis.Redis:
    return connect(get_settings().broker_url)


@functools.cache
def _task_sent_channel() -> str:
    """The pub/sub channel kombu's Redis transport uses for task-sent events."""
    return broker_wire.event_channel(_broker().connection_pool.connection_kwargs.get("db", 0), "task.sent")


def _route(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Queue, dict[str, Any]]:
    """The queue `task` is routed to (task_routes included), and its options."""
    # What apply_async starts from: the task's own queue, limits, serializer, ignore_result.
    options = {**task._get_exec_options(), "ignore_result": task.ignore_result}
    options = celery_app.amqp.router.route(options, task.name, args, kwargs, task)
    unsupported = sorted(set(options) - SUPPORTED_OPTIONS)
    if unsupported:
        raise ValueError(f"{task.name}: send_task cannot publish with {', '.join(unsupported)}; use apply_async")
    queue: Queue = options["queue"]
    if options.get("serializer", "json") != "json" or queue.exchange.type != "direct":
        raise ValueError(f"{task.name}: send_task publishes JSON to direct queues only; use apply_async")
    return queue, options


def _delivery_mode(queue: Queue, options: dict[str, Any]) -> int:
    """As Celery's task sender and kombu's producer choose it: the task's or route's, the
    exchange's, then task_default_delivery_mode; names ("transient") become kombu's numbers."""
    chosen = options.get("delivery_mode") or queue.exchange.delivery_mode
    mode: int = maybe_delivery_mode(chosen or celery_app.conf.task_default_delivery_mode)
    return mode


def _sent_event(fields: dict[str, Any]) -> str:
    return broker_wire.task_sent_event(fields, celery_app.clock.forward())


async def send_task(
    task: Task,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    task_id: str,
    *,
    headers: Mapping[str, Any] | None = None,
) -> None:
    """Queue `task(*args, **kwargs)` as `task.apply_async(args, kwargs, task_id=task_id, headers=headers)` would.

    `headers` are extra message headers (the request id, erp.core.request_ids); the worker
    sees them on `task.request`. Raises TypeError for arguments the task does not accept,
    before anything is sent, and redis' errors when Redis does not take the message.
    """
    if task.typing:
        task.__header__(*args, **kwargs)
    queue, options = _route(task, args, kwargs)
    if celery_app.conf.task_always_eager:
        # Development and tests: no message, the task runs here (after the same checks).
        await eager.run_from_the_loop(task, args, kwargs, task_id, headers=headers)
        return
    message_headers, properties, body, sent_event = celery_app.amqp.as_task_v2(
        task_id,
        task.name,
        args,
        kwargs,
        reply_to=celery_app.thread_oid,
        create_sent_event=celery_app.conf.task_send_sent_event,
        **{key: options[key] for key in MESSAGE_OPTIONS if key in options},
    )
    if headers:
        # What kombu's send_task_message does with apply_async's `headers`: merged into the message's.
        message_headers.update(headers)
    # Celery sends a direct-queue task through the default exchange, keyed by the queue name.
    exchange, routing_key = "", queue.name
    if signals.before_task_publish.receivers:
        signals.before_task_publish.send(
            sender=task.name,
            body=body,
            exchange=exchange,
            routing_key=routing_key,
            declare=[queue],
            headers=message_headers,
            properties=properties,
            retry_policy=None,
        )
    pipeline = _broker().pipeline(transaction=False)
    pipeline.lpush(
        queue.name,
        broker_wire.envelope(
            body,
            message_headers,
            properties,
            exchange=exchange,
            routing_key=routing_key,
            delivery_mode=_delivery_mode(queue, options),
            compression=options.get("compression") or celery_app.conf.task_compression,
        ),
    )
    if sent_event is not None:
        sent_event.update(queue=queue.name, exchange=exchange, routing_key=routing_key)
        pipeline.publish(_task_sent_channel(), _sent_event(sent_event))
    await pipeline.execute()
    if signals.after_task_publish.receivers:
        signals.after_task_publish.send(
            sender=task.name, body=body, headers=message_headers, exchange=exchange, routing_key=routing_key
        )


@dataclass(frozen=True)
class QueueStats:
    """What waits in one queue: how many messages, and how long the oldest has waited (None
    when the queue is empty or its oldest message carries no `published_at` header)."""

    depth: int
    oldest_age_seconds: float | None


async def queue_stats(queues: Iterable[str], *, client: redis.Redis | None = None) -> dict[str, QueueStats]:
    """Depth and oldest message of each queue, all its lists (one per priority step) together,
    in one round trip (on `client`, else the web process's pool).

    kombu pushes on the head of a list and workers pop from its tail, so the tail (LINDEX -1)
    is the message that has waited longest in that list; the oldest of a queue is the oldest of
    its lists' tails. Its age is measured from the publisher's clock: hosts whose clocks differ
    by a second see ages a second off.
    """
    names = list(queues)
    pipeline = (client or _broker()).pipeline(transaction=False)
    for queue in names:
        for key in broker_wire.queue_keys(queue):
            pipeline.llen(key)
            pipeline.lindex(key, -1)
    answers = iter(await pipeline.execute())
    now = time.time()
    stats: dict[str, QueueStats] = {}
    for queue in names:
        depth, published = 0, []
        for _ in broker_wire.queue_keys(queue):
            depth += next(answers)
            moment = broker_wire.published_at(next(answers))
            if moment is not None:
                published.append(moment)
        stats[queue] = QueueStats(depth, max(0.0, now - min(published)) if published else None)
    return stats


async def close() -> None:
    """Close the pooled connections (the web process's shutdown)."""
    if _broker.cache_info().currsize:
        await _broker().aclose()
