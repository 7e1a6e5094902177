"""Caps on how many of one kind of request may be under way at once, per holder, across processes.

An upload holds a socket, a spool and, for its last moments, a database connection; a member
who opens a hundred at once (or a slow network that makes them pile up) takes from everyone.
So an upload takes a slot from its user and from its organization before its body is read, and
gives them back when it ends; a request finding either full is a 429 with `Retry-After`.

The slots are in Redis (the result-backend database), because the web runs several processes
and dynos: each holder is a sorted set of slot ids scored by when the slot lapses. Taking a
slot is one Lua script (drop lapsed slots, count, add to every holder or to none), so two
processes cannot both take the last one. A slot lapses `SLOT_LEASE_SECONDS` after it was last
renewed; the request renews it every third of that while it runs, so a web process killed
mid-upload gives its slots back within a minute rather than never.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
from fastapi import HTTPException

from erp.core import broker
from erp.core.config import get_settings
from erp.core.dispatch import within_deadline

logger = logging.getLogger(__name__)

SLOT_KEY = "erp:slots:{kind}:{holder}"
SLOT_LEASE_SECONDS = 60.0

# KEYS: one sorted set per holder; ARGV[1]: slot id, ARGV[2]: lease in ms, ARGV[3..]: each
# holder's limit. Returns 0 when taken, else the (1-based) index of the first full holder.
_TAKE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
        return i
    end
end
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, now_ms + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
end
return 0
"""
_RENEW = """
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, 'XX', until_ms, ARGV[1])
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
end
return 0
"""


@dataclass(frozen=True)
class Holder:
    """Who a slot is counted against: `what` names it in the 429 (e.g. "you", "organization 7")."""

    key: str
    limit: int
    what: str


@functools.cache
def _client() -> redis.Redis:
    return broker.connect(get_settings().result_backend_url)


async def _run(script: str, keys: Sequence[str], *args: object) -> int:
    # redis-py types eval for both its clients; the asyncio client's returns an awaitable.
    pending = cast(Awaitable[Any], _client().eval(script, len(keys), *keys, *(str(arg) for arg in args)))
    return int(await pending)


def too_many(kind: str, holder: Holder, retry_after: int) -> HTTPException:
    return HTTPException(
        429,
        f"{holder.what} already {'have' if holder.what == 'you' else 'has'} {holder.limit} {kind}(s) under way,"
        f" the most allowed at once: wait for one to finish (try again in about {retry_after} s)",
        headers={"Retry-After": str(retry_after)},
    )


@contextlib.asynccontextmanager
async def concurrency_slot(kind: str, holders: Sequence[Holder], retry_after: int) -> AsyncIterator[None]:
    """Hold one `kind` slot of each holder for the duration of the block, or raise a 429.

    Redis away: a 503, like a dispatch (erp.core.dispatch.within_deadline).
    """
    keys = [SLOT_KEY.format(kind=kind, holder=holder.key) for holder in holders]
    slot_id = uuid.uuid4().hex
    lease_ms = int(SLOT_LEASE_SECONDS * 1000)
    full = await within_deadline(_run(_TAKE, keys, slot_id, lease_ms, *(holder.limit for holder in holders)))
    if full:
        holder = holders[full - 1]
        logger.info(
            "%s refused: %s at the limit of %s",
            kind,
            holder.key,
            holder.limit,
            extra={"action": "concurrency_slot.refused", "kind": kind, "holder": holder.key},
        )
        raise too_many(kind, holder, retry_after)

    async def renew() -> None:
        while True:
            await asyncio.sleep(SLOT_LEASE_SECONDS / 3)
            try:
                await _run(_RENEW, keys, slot_id, lease_ms)
            except Exception as error:  # the slot lapses by itself if Redis stays away
                logger.warning(
                    "could not renew a %s slot: %s",
                    kind,
                    type(error).__name__,
                    extra={"action": "concurrency_slot.renew_failed", "kind": kind},
                )

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        try:
            pipeline = _client().pipeline(transaction=False)
            for key in keys:
                pipeline.zrem(key, slot_id)
            await asyncio.wait_for(pipeline.execute(), 3.0)
        except Exception as error:  # it lapses by itself within SLOT_LEASE_SECONDS
            logger.warning(
                "could not give back a %s slot: %s",
                kind,
                type(error).__name__,
                extra={"action": "concurrency_slot.release_failed", "kind": kind},
            )


async def close() -> None:
    if _client.cache_info().currsize:
        await _client().aclose()
