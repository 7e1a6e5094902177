"""A worker that is alive but no longer takes messages exits, so that the platform restarts it.

A worker can stop consuming without dying: kombu 5.3's Redis transport did after a Redis
restart (erp.core.redis_transport mends the cause that is known), and a future defect of the
same kind would look the same: the process answers, logs nothing, and the queue grows. No
process manager notices a process that is alive. So a thread in the worker's main process
watches for exactly that: messages wait in the queues this worker consumes, it has room for
more (fewer reserved tasks than its prefetch limit), and it has received none for
`CELERY_WORKER_STALL_TIMEOUT_SECONDS`. Then it logs why and stops the worker with a warm
shutdown (running tasks get the usual grace) and exit code 70 (EX_SOFTWARE). Heroku restarts a
dyno whose process exits, Dokku and Compose restart the container (`restart: unless-stopped`,
Dokku's default `on-failure` policy), and under honcho the stop is seen at once.

Checked every STALL_CHECK_EVERY_SECONDS with one pipelined round of LLEN; while Redis itself
cannot be reached the worker is not judged (it is reconnecting, as it should).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from erp.core import broker_wire

logger = logging.getLogger(__name__)

STALL_CHECK_EVERY_SECONDS = 5.0
EX_SOFTWARE = 70
# After asking for the warm shutdown: the grace for running tasks, then this much more.
FORCED_EXIT_MARGIN_SECONDS = 15.0


class ConsumerWatchdog:
    """Watches one worker's consumer (see the module docstring)."""

    def __init__(
        self,
        consumer: Any,
        client: redis.Redis,
        *,
        stall_seconds: float,
        grace_seconds: float,
        stop_worker: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._client = client
        self._stall_seconds = stall_seconds
        self._grace_seconds = grace_seconds
        self._stop_worker = stop_worker
        self._clock = clock
        self._received = 0
        self._received_at_start = 0
        self._stalled_since: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="erp-consumer-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def message_received(self) -> None:
        """task_received (main process): the consumer is consuming."""
        self._received += 1

    def _run(self) -> None:
        while not self._stopped.wait(STALL_CHECK_EVERY_SECONDS):
            try:
                self.check()
            except Exception:  # the watchdog must never be what stops a healthy worker
                logger.exception("worker: the consumer watchdog failed", extra={"action": "watchdog_failed"})

    def check(self) -> bool:
        """One look; True when the worker was found stalled and asked to stop."""
        waiting = self._waiting()
        received = self._received != self._received_at_start
        self._received_at_start = self._received
        if not waiting or received or not self._has_room():
            self._stalled_since = None
            return False
        now = self._clock()
        if self._stalled_since is None:
            self._stalled_since = now
            return False
        if now - self._stalled_since < self._stall_seconds:
            return False
        logger.error(
            "worker: %d message(s) wait in %s but this worker has taken none for %.0f s although it has room"
            " for more: it stopped consuming; exiting (code %d) so that it is restarted",
            sum(waiting.values()),
            ", ".join(sorted(waiting)),
            now - self._stalled_since,
            EX_SOFTWARE,
            extra={"action": "consumer_stalled"},
        )
        self._stopped.set()
        self._stop_worker(EX_SOFTWARE)
        deadline = threading.Timer(self._grace_seconds + FORCED_EXIT_MARGIN_SECONDS, os._exit, args=(EX_SOFTWARE,))
        deadline.daemon = True
        deadline.start()
        return True

    def _queues(self) -> list[str]:
        task_consumer = getattr(self._consumer, "task_consumer", None)
        return [queue.name for queue in getattr(task_consumer, "queues", None) or []]

    def _waiting(self) -> dict[str, int]:
        """Messages waiting per consumed queue (those with any); empty while Redis is away."""
        queues = self._queues()
        if not queues:
            return {}
        try:
            pipeline = self._client.pipeline(transaction=False)
            for queue in queues:
                for key in broker_wire.queue_keys(queue):
                    pipeline.llen(key)
            lengths = iter(pipeline.execute())
        except redis.RedisError:
            return {}
        counts = {queue: sum(next(lengths) for _ in broker_wire.queue_keys(queue)) for queue in queues}
        return {queue: count for queue, count in counts.items() if count}

    def _has_room(self) -> bool:
        from celery.worker import state

        qos = getattr(self._consumer, "qos", None)
        limit = getattr(qos, "value", 0) or 0
        return limit == 0 or len(state.reserved_requests) < limit


def stop_worker_warmly(exitcode: int) -> None:
    """Ask Celery's worker for a warm shutdown with `exitcode`, as its SIGTERM handler does."""
    from celery.worker import state

    state.should_stop = exitcode
