"""Awaiting Redis from a request within a deadline: a missing Redis is a 503 in seconds.

Here rather than in erp.core.dispatch, which uses it, because the quotas dispatch checks first
(erp.core.quotas, erp.core.concurrency_slots) use it too, and dispatch imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import HTTPException

from erp.core.broker_wire import BROKER_ERRORS

# Longer than kombu's publish retries (about two seconds, task_publish_retry_policy) and the
# async clients' connect timeout (erp.core.broker.connect); past this the caller gets a 503
# instead of a request that hangs while Redis is away.
BROKER_TIMEOUT_SECONDS = 3.0
T = TypeVar("T")


def broker_unavailable(error: BaseException) -> HTTPException:
    return HTTPException(503, f"the task queue is unavailable, try again shortly ({type(error).__name__})")


async def within_deadline(awaitable: Awaitable[T]) -> T:
    """Await a Redis call; 503 when Redis fails or does not answer in time."""
    try:
        return await asyncio.wait_for(awaitable, BROKER_TIMEOUT_SECONDS)
    except BROKER_ERRORS as error:
        raise broker_unavailable(error) from error
