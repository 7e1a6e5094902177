"""Run claims: how beat makes sure a run is never sent twice.

Before publishing a chunk of runs, beat claims each run's id in Redis with SET NX ("pending");
after publishing, it marks them "sent", each step one round trip for the whole chunk. A run
found claimed "sent" is out. One found "pending" was claimed by a beat that died mid-chunk: it
is out if its message is in the queue, reserved (unacked) or has a result; if not, it is sent
now. So a crash neither repeats nor loses a run, except a beat killed inside the publish call
itself, which may lose that one run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol, TypeVar, cast

import redis
from celery import Celery

from erp.core import broker_wire

logger = logging.getLogger(__name__)

# A claimed run id is kept this long: longer than any commit retry, short enough to expire.
RUN_CLAIM_TTL_SECONDS = 24 * 3600
SENT = b"sent"


class ClaimedRun(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def queue(self) -> str | None: ...


RunT = TypeVar("RunT", bound=ClaimedRun)


def claim_key(run_id: str) -> str:
    return f"erp:beat:run:{run_id}"


class RunClaims:
    def __init__(self, client: redis.Redis, app: Celery, instance: str) -> None:
        self._client = client
        self._app = app
        self._pending = f"pending:{instance}"

    def claim(self, runs: list[RunT]) -> list[RunT]:
        """Claim the runs; returns those to publish (claimed now, or claimed by a beat that died
        before their message left)."""
        pipeline = self._client.pipeline(transaction=False)
        for run in runs:
            pipeline.set(claim_key(run.id), self._pending, nx=True, ex=RUN_CLAIM_TTL_SECONDS)
        to_publish = [
            run for run, claimed in zip(runs, pipeline.execute(), strict=True) if claimed or not self._already_out(run)
        ]
        recognised = len(runs) - len(to_publish)
        if recognised:
            logger.warning(
                "beat: %d run(s) had already been sent (by a beat that stopped); not sent again",
                recognised,
                extra={"action": "runs_recognised"},
            )
        return to_publish

    def mark_sent(self, runs: Iterable[ClaimedRun]) -> None:
        runs = list(runs)
        if not runs:
            return
        try:
            pipeline = self._client.pipeline(transaction=False)
            for run in runs:
                pipeline.set(claim_key(run.id), SENT, xx=True, keepttl=True)
            pipeline.execute()
        except redis.RedisError as error:
            # Left "pending": a later attempt finds the messages and does not resend them.
            logger.warning("beat: could not mark %d sent run(s) (%s)", len(runs), error)

    def release(self, runs: Iterable[ClaimedRun]) -> None:
        """Drop the claims of runs that were not published."""
        keys = [claim_key(run.id) for run in runs]
        if keys:
            # If Redis is down, a "pending" claim is checked against the queue anyway.
            with contextlib.suppress(redis.RedisError):
                self._client.delete(*keys)

    def _already_out(self, run: ClaimedRun) -> bool:
        """For a run someone already claimed: did its message leave?"""
        claim = self._client.get(claim_key(run.id))
        if claim is None or claim == SENT:
            return claim is not None
        backend = self._app.backend
        if backend.get(backend.get_key_for_task(run.id)) is not None:
            return True
        needle = run.id.encode()
        queue = run.queue or self._app.conf.task_default_queue
        for key in broker_wire.queue_keys(queue):
            if any(needle in message for message in cast(list[bytes], self._client.lrange(key, 0, -1))):
                return True
        reserved = cast(list[bytes], self._client.hvals(broker_wire.UNACKED_HASH))
        return any(needle in message for message in reserved)
