"""A real Celery worker in a thread of the test's process (`celery.contrib.testing`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery.worker import WorkController


@contextlib.contextmanager
def in_process_worker() -> Iterator[WorkController]:
    """The product's Celery app served by a solo-pool worker in a thread, until the block ends.

    The solo pool: one task at a time, the one pool besides prefork that runs async def tasks.
    Each worker gets an event loop (kombu's hub) of its own: Celery keeps the first worker's in
    a global and hands it to the next, whose retries and countdowns then wait for ever on the
    timer of a worker that has stopped.
    """
    from celery.contrib.testing.worker import start_worker
    from kombu.asynchronous import set_event_loop

    from erp.core.celery_app import celery_app

    set_event_loop(None)
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
            yield worker
    finally:
        set_event_loop(None)
