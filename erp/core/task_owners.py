"""Who started which task, kept in Redis beside the task's result and expiring with it.

A task id nobody recorded is unknown (404), not an endless PENDING; a record lives exactly as
long as the result it guards (CELERY_RESULT_EXPIRES_SECONDS), so the two cannot disagree.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import redis.asyncio as redis

from erp.core import broker
from erp.core.config import get_settings
from erp.core.errors import InvalidInputError

OWNER_KEY = "erp:task-owner:{task_id}"
USER_TASKS_KEY = "erp:user-tasks:{user_id}"
# How many recent task ids per user GET /api/v1/tasks can list.
RECENT_TASKS_KEPT = 1000


@functools.cache
def _client() -> redis.Redis:
    return broker.connect(get_settings().result_backend_url)


@dataclass(frozen=True)
class TaskOwner:
    task_id: str
    task_name: str
    user_id: int
    organization_id: int | None
    created_at: float  # unix time


async def record_owner(owner: TaskOwner) -> None:
    """Store the owner, and the task id in the user's recent list (one round trip)."""
    ttl = get_settings().CELERY_RESULT_EXPIRES_SECONDS
    owner_key = OWNER_KEY.format(task_id=owner.task_id)
    recent_key = USER_TASKS_KEY.format(user_id=owner.user_id)
    fields = {key: "" if value is None else str(value) for key, value in asdict(owner).items()}
    pipeline = _client().pipeline(transaction=False)
    pipeline.hset(owner_key, mapping=fields)
    pipeline.expire(owner_key, ttl)
    pipeline.zadd(recent_key, {owner.task_id: owner.created_at})
    pipeline.zremrangebyrank(recent_key, 0, -RECENT_TASKS_KEPT - 1)
    pipeline.expire(recent_key, ttl)
    await pipeline.execute()


async def forget_owner(owner: TaskOwner) -> None:
    """Undo `record_owner` for a task that could not be sent."""
    pipeline = _client().pipeline(transaction=False)
    pipeline.delete(OWNER_KEY.format(task_id=owner.task_id))
    pipeline.zrem(USER_TASKS_KEY.format(user_id=owner.user_id), owner.task_id)
    await pipeline.execute()


async def get_owner(task_id: str, client: redis.Redis | None = None) -> TaskOwner | None:
    """The task's owner record; `client` is a Redis client of the caller's own (the command
    line's: the process-wide one belongs to the web's event loop)."""
    fields: dict[str, str] = await (client or _client()).hgetall(OWNER_KEY.format(task_id=task_id))  # type: ignore[misc]
    if not fields:
        return None
    return TaskOwner(
        task_id=fields["task_id"],
        task_name=fields["task_name"],
        user_id=int(fields["user_id"]),
        organization_id=int(fields["organization_id"]) if fields["organization_id"] else None,
        created_at=float(fields["created_at"]),
    )


class InvalidCursor(InvalidInputError):
    """A `before` that is not a page's `next_before` (422)."""


@dataclass(frozen=True)
class RecentCursor:
    """Where a page of a user's tasks ended: the last task's dispatch time and id. Ids are the
    tie-break, in Redis' own order for equal scores, so no task is skipped or shown twice."""

    created_at: float
    task_id: str

    def text(self) -> str:
        return f"{self.created_at!r}:{self.task_id}"

    @classmethod
    def parse(cls, text: str) -> RecentCursor:
        moment, _, task_id = text.partition(":")
        try:
            created_at = float(moment)
        except ValueError:
            created_at = float("nan")
        if not task_id or len(task_id) > 64 or created_at != created_at or created_at in (float("inf"), float("-inf")):
            raise InvalidCursor(f"before {text[:80]!r} is not a page's next_before")
        return cls(created_at, task_id)


async def recent_tasks(user_id: int, limit: int, before: RecentCursor | None = None) -> list[RecentCursor]:
    """The user's tasks, newest first, still within the result expiry, after `before` (keyset:
    a page is one range query however deep it is)."""
    oldest = time.time() - get_settings().CELERY_RESULT_EXPIRES_SECONDS
    key = USER_TASKS_KEY.format(user_id=user_id)
    if before is None:
        newest: float | str = "+inf"
        tied = 0
    else:
        # Tasks dispatched at the very same moment as the page's last are read again and skipped
        # up to it (a tie is rare: the score is the dispatch time to the microsecond).
        newest = before.created_at
        tied = await _client().zcount(key, before.created_at, before.created_at)
    entries: list[tuple[str, float]] = await _client().zrevrangebyscore(
        key, newest, oldest, start=0, num=limit + tied, withscores=True
    )
    found = [RecentCursor(score, task_id) for task_id, score in entries]
    if before is not None:
        found = [e for e in found if e.created_at < before.created_at or e.task_id < before.task_id]
    return found[:limit]


async def recent_task_ids(user_id: int, limit: int) -> list[str]:
    """The user's task ids, newest first, still within the result expiry."""
    return [entry.task_id for entry in await recent_tasks(user_id, limit)]


async def close() -> None:
    if _client.cache_info().currsize:
        await _client().aclose()
