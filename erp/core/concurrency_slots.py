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

The same slots count reports and imports queued or running per organization
(erp.core.quotas): there a slot is taken when the task is dispatched and given back by the
worker when the task ends (erp.core.running_limits), so the slot outlives the request. `take`,
`give_back`, `hold` and `release` are those steps one by one; a key's expiry is only ever
extended, because slots of different leases (a queued task's, a running one's) share a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as redis
from fastapi import HTTPException

from erp.core import broker
from erp.core.config import get_settings
from erp.core.deadlines import within_deadline

if TYPE_CHECKING:
    from redis import Redis as SyncRedis

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
local lease = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, now_ms + lease, ARGV[1])
    if redis.call('PTTL', key) < lease then
        redis.call('PEXPIRE', key, lease)
    end
end
return 0
"""
# ARGV[1]: slot id, ARGV[2]: lease in ms, ARGV[3]: 'XX' to renew only a slot still there, or
# 'ANY' to put it back whatever the count (a task the worker starts was admitted already).
_RENEW = """
local now = redis.call('TIME')
local lease = tonumber(ARGV[2])
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + lease
for _, key in ipairs(KEYS) do
    if ARGV[3] == 'XX' then
        redis.call('ZADD', key, 'XX', until_ms, ARGV[1])
    else
        redis.call('ZADD', key, until_ms, ARGV[1])
    end
    if redis.call('PTTL', key) < lease then
        redis.call('PEXPIRE', key, lease)
    end
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


def too_many(kind: str, holder: Holder, retry_after: int, setting: str | None = None) -> HTTPException:
    allowed = f"the most allowed at once ({setting})" if setting else "the most allowed at once"
    return HTTPException(
        429,
        f"{holder.what} already {'have' if holder.what == 'you' else 'has'} {holder.limit} {kind}(s) under way,"
        f" {allowed}: wait for one to finish (try again in about {retry_after} s)",
        headers={"Retry-After": str(retry_after)},
    )


def slot_keys(kind: str, holders: Sequence[Holder] | Sequence[str]) -> list[str]:
    return [SLOT_KEY.format(kind=kind, holder=holder if isinstance(holder, str) else holder.key) for holder in holders]


async def take(kind: str, holders: Sequence[Holder], slot_id: str, lease_seconds: float) -> Holder | None:
    """Take slot `slot_id` of every holder, lapsing after `lease_seconds`; or, when one of them
    is full, of none: that holder is returned. Redis away: a 503 (within_deadline)."""
    keys = slot_keys(kind, holders)
    lease_ms = int(lease_seconds * 1000)
    full = await within_deadline(_run(_TAKE, keys, slot_id, lease_ms, *(holder.limit for holder in holders)))
    if not full:
        return None
    holder = holders[full - 1]
    logger.info(
        "%s refused: %s at the limit of %s",
        kind,
        holder.key,
        holder.limit,
        extra={"action": "concurrency_slot.refused", "kind": kind, "holder": holder.key},
    )
    return holder


async def give_back(kind: str, holders: Sequence[Holder], slot_id: str) -> None:
    """Give slot `slot_id` back to every holder; best effort (it lapses by itself)."""
    try:
        pipeline = _client().pipeline(transaction=False)
        for key in slot_keys(kind, holders):
            pipeline.zrem(key, slot_id)
        await asyncio.wait_for(pipeline.execute(), 3.0)
    except Exception as error:
        logger.warning(
            "could not give back a %s slot: %s",
            kind,
            type(error).__name__,
            extra={"action": "concurrency_slot.release_failed", "kind": kind},
        )


async def live_counts(keys: Sequence[str]) -> list[int]:
    """How many slots each key holds that have not lapsed (a look, taking nothing)."""
    pipeline = _client().pipeline(transaction=False)
    for key in keys:
        pipeline.zcount(key, "(" + str(int(time.time() * 1000)), "+inf")
    return [int(count) for count in await pipeline.execute()]


# --- the worker's side, on its synchronous Redis client (erp.core.running_limits) ----------


def hold(client: SyncRedis, keys: Sequence[str], slot_id: str, lease_seconds: float) -> None:
    """Put slot `slot_id` in every key (there or not, whatever the count), lapsing after `lease_seconds`."""
    client.eval(_RENEW, len(keys), *keys, slot_id, str(int(lease_seconds * 1000)), "ANY")


def release(client: SyncRedis, keys: Sequence[str], slot_id: str) -> None:
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.zrem(key, slot_id)
    pipeline.execute()


@contextlib.asynccontextmanager
async def concurrency_slot(kind: str, holders: Sequence[Holder], retry_after: int) -> AsyncIterator[None]:
    """Hold one `kind` slot of each holder for the duration of the block, or raise a 429.

    Redis away: a 503, like a dispatch (erp.core.deadlines.within_deadline).
    """
    keys = slot_keys(kind, holders)
    slot_id = uuid.uuid4().hex
    lease_ms = int(SLOT_LEASE_SECONDS * 1000)
    full = await take(kind, holders, slot_id, SLOT_LEASE_SECONDS)
    if full is not None:
        raise too_many(kind, full, retry_after)

    async def renew() -> None:
        while True:
            await asyncio.sleep(SLOT_LEASE_SECONDS / 3)
            try:
                await _run(_RENEW, keys, slot_id, lease_ms, "XX")
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
        await give_back(kind, holders, slot_id)  # or it lapses by itself within SLOT_LEASE_SECONDS


async def close() -> None:
    if _client.cache_info().currsize:
        await _client().aclose()
