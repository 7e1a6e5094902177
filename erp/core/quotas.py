"""What one user and one organization may queue: a rate, and the long tasks under way.

Every endpoint that queues work goes through erp.core.dispatch, which calls `admit` first:

- **rate**: at most TASKS_PER_MINUTE_PER_USER tasks per minute per user and
  TASKS_PER_MINUTE_PER_ORGANIZATION per organization, as a burst of that many at once and then
  one every 60/N seconds (GCRA, the generic cell rate algorithm: one timestamp per holder, the
  moment its bucket is empty again). One more is a 429 whose `Retry-After` is the time until the
  next one is allowed;
- **running**: a task declared with erp.core.running_limits.limit_running (reports, imports)
  also takes one of its organization's slots, or is a 429.

The state is in Redis (the result-backend database) because the web runs several processes
and dynos. Why a Lua script rather than the `limits` library: limits 5.x's asyncio Redis
storage needs coredis (a second Redis client) or, through redis-py's asyncio client, redis-py
5.2 or later (it raises ConfigurationError with the redis-py 5.0.x the product pins); its
synchronous storage would block the event loop or cost a thread per request; and it counts
one key at a time, where a dispatch counts against the user and the organization together, in
both or in neither. The script is one round trip and atomic, so two web processes can never
both take the last token.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
from fastapi import HTTPException

from erp.core import broker, concurrency_slots, running_limits
from erp.core.caller import Caller
from erp.core.concurrency_slots import Holder
from erp.core.config import get_settings
from erp.core.deadlines import within_deadline

logger = logging.getLogger(__name__)

RATE_KEY = "erp:rate:tasks:{holder}"
RATE_PERIOD_SECONDS = 60
# How soon a client refused for reports or imports under way should look again: such tasks take
# seconds to minutes, and a status poll this often costs nothing.
RUNNING_RETRY_AFTER_SECONDS = 10

# KEYS: one key per holder (its "theoretical arrival time", in ms); ARGV[1]: the period in ms;
# ARGV[2..]: each holder's limit per period. Returns {0, 0} when allowed (every holder counted),
# else {index of the first holder refusing (1-based), ms until it would allow} (none counted).
_RATE_CHECK = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local period = tonumber(ARGV[1])
local next_tats = {}
for i, key in ipairs(KEYS) do
    local interval = period / tonumber(ARGV[i + 1])
    local tat = tonumber(redis.call('GET', key) or now_ms)
    if tat < now_ms then
        tat = now_ms
    end
    local allowed_at = tat + interval - period
    if allowed_at > now_ms then
        return {i, math.ceil(allowed_at - now_ms)}
    end
    next_tats[i] = tat + interval
end
"""
_ADMIT = (
    _RATE_CHECK
    + """
for i, key in ipairs(KEYS) do
    redis.call('SET', key, tostring(next_tats[i]), 'PX', math.ceil(next_tats[i] - now_ms))
end
return {0, 0}
"""
)
# The same answer, nothing counted.
_PEEK = _RATE_CHECK + "return {0, 0}\n"


@functools.cache
def _client() -> redis.Redis:
    return broker.connect(get_settings().result_backend_url)


def rate_holders(caller: Caller) -> list[Holder]:
    settings = get_settings()
    holders = [Holder(f"user:{caller.user_id}", settings.TASKS_PER_MINUTE_PER_USER, "you")]
    if caller.organization_id is not None:
        holders.append(
            Holder(
                running_limits.organization_holder(caller.organization_id),
                settings.TASKS_PER_MINUTE_PER_ORGANIZATION,
                f"organization {caller.organization_id}",
            )
        )
    return holders


async def _rate(script: str, holders: Sequence[Holder]) -> tuple[Holder, int] | None:
    """Run a rate script over the holders: None when allowed, else the holder refusing and the
    seconds until it allows one more."""
    keys = [RATE_KEY.format(holder=holder.key) for holder in holders]
    args = [str(RATE_PERIOD_SECONDS * 1000), *(str(holder.limit) for holder in holders)]
    pending = cast(Awaitable[Any], _client().eval(script, len(keys), *keys, *args))
    refused, wait_ms = (int(value) for value in await within_deadline(pending))
    if not refused:
        return None
    return holders[refused - 1], max(1, math.ceil(wait_ms / 1000))


def too_many_tasks(holder: Holder, retry_after: int) -> HTTPException:
    setting = "TASKS_PER_MINUTE_PER_USER" if holder.what == "you" else "TASKS_PER_MINUTE_PER_ORGANIZATION"
    return HTTPException(
        429,
        f"{holder.what} queued {holder.limit} tasks within a minute, the most allowed ({setting}):"
        f" try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


@dataclass(frozen=True)
class RunningSlot:
    kind: str
    setting: str
    holders: list[Holder]

    def refused(self, holder: Holder) -> HTTPException:
        return concurrency_slots.too_many(self.kind, holder, RUNNING_RETRY_AFTER_SECONDS, self.setting)


def running_slot(caller: Caller, task_name: str) -> RunningSlot | None:
    limit = running_limits.running_limit(task_name)
    if limit is None or caller.organization_id is None:
        return None
    holder = Holder(
        running_limits.organization_holder(caller.organization_id),
        limit.per_organization(get_settings()),
        f"organization {caller.organization_id}",
    )
    return RunningSlot(limit.kind, limit.setting, [holder])


@dataclass(frozen=True)
class Admission:
    """A dispatch counted against its caller's limits; `undo` gives back what can be given back
    (the running slot) when the task could not be queued after all."""

    task_id: str
    running: RunningSlot | None

    async def undo(self) -> None:
        if self.running is not None:
            await concurrency_slots.give_back(self.running.kind, self.running.holders, self.task_id)


async def admit(caller: Caller, task_name: str, task_id: str) -> Admission:
    """Count the dispatch of `task_name` (as `task_id`) against `caller`'s limits, or raise a 429
    with Retry-After saying which limit (see the module docstring). Redis away: a 503."""
    running = running_slot(caller, task_name)
    if running is not None:
        full = await concurrency_slots.take(running.kind, running.holders, task_id, running_limits.QUEUED_LEASE_SECONDS)
        if full is not None:
            raise running.refused(full)
    admission = Admission(task_id, running)
    try:
        refused = await _rate(_ADMIT, rate_holders(caller))
    except BaseException:
        await admission.undo()
        raise
    if refused is not None:
        await admission.undo()
        holder, retry_after = refused
        logger.info(
            "task %s refused: %s at its rate limit of %s per minute",
            task_name,
            holder.key,
            holder.limit,
            extra={"action": "quotas.rate_refused", "holder": holder.key, "task_name": task_name},
        )
        raise too_many_tasks(holder, retry_after)
    return admission


async def room_for(caller: Caller, task_name: str) -> None:
    """A 429 now if `caller` could not queue `task_name` at the moment, counting nothing: for an
    endpoint that reads a large body before it dispatches (an upload), so a refusal comes before
    the body rather than after it. `admit` still decides when the task is dispatched."""
    running = running_slot(caller, task_name)
    if running is not None:
        keys = concurrency_slots.slot_keys(running.kind, running.holders)
        counts = await within_deadline(concurrency_slots.live_counts(keys))
        for holder, count in zip(running.holders, counts, strict=True):
            if count >= holder.limit:
                raise running.refused(holder)
    refused = await _rate(_PEEK, rate_holders(caller))
    if refused is not None:
        raise too_many_tasks(*refused)


async def close() -> None:
    if _client.cache_info().currsize:
        await _client().aclose()
