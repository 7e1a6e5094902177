"""Publishing one planned batch on a thread of its own while beat plans the next.

A herd's batch is first planned (PostgreSQL: the rows locked, the ledger written, the rows
advanced) and then published (Redis, and the statement marking it sent). One thread doing both
leaves one side idle while it waits on the other; on two threads, each waits while the other
works: the planning of batch k+1 runs while batch k is published. The order the herd's
guarantees rest on stays: a batch is committed before it is published, and it is published
before the next batch is committed (`wait`, called just before that commit), so batches still
leave in the order they were planned and a dead beat leaves at most the batch being published
and the one being planned (both planned in the ledger, sent by the next tick of any beat).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from erp.core.broker_wire import BROKER_ERRORS


class BackgroundSender:
    """One batch being published at a time, on one thread; the broker's error kept for the caller."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beat-sender")
        self._pending: Future[None] | None = None
        # What Redis raised while publishing: planning goes on without publishing (Redis away
        # stops the publishing, not the planning); the caller raises it once the planning is done.
        self.broker_error: Exception | None = None

    def send(self, publish: Callable[[], None]) -> None:
        """Start publishing a batch once the previous one is out."""
        self.wait()
        self._pending = self._executor.submit(publish)

    def wait(self) -> None:
        """Until the batch being published is out. Redis's error is kept in `broker_error`;
        any other (PostgreSQL's) is raised here, as it would have been on one thread."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except BROKER_ERRORS as error:
            self.broker_error = error

    def close(self) -> None:
        self.wait()
        self._executor.shutdown(wait=True)
