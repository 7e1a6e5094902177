"""`Idempotency-Key`: a retried request queues its work once.

A client that timed out on a POST cannot know whether its work was queued; sent again with the
same `Idempotency-Key`, the request answers with the first one's response (202, the same task
id) instead of queuing the work a second time. Every route that queues work or stores a file
takes the dependency and wraps what it does:

    async def dispatch_ping(request: Request, caller: CurrentCaller, idempotency: IdempotencyKey) -> TaskAccepted:
        return await idempotency.once(caller, TaskAccepted, lambda: dispatch(request, caller, ping))

The rules, in one place for every route:

- A key belongs to its caller (the user): two users may use the same key for different requests.
- A key names one request: its method, path, query, organization and body, kept as a SHA-256
  fingerprint. Another request under a key already used is a 422 saying so; nothing is queued.
- The first request claims the key in Redis before it does anything (`in_progress`, a lease of
  `LEASE_SECONDS` renewed while it runs, so a web process that dies mid-request frees its keys
  within that time). A second request with the same key while the first is running answers 409
  with `Retry-After` at once, rather than wait: a web process must not hold a request (and its
  client's connection) open on another one.
- When the work has been queued, the response is stored under the key for
  IDEMPOTENCY_KEY_TTL_SECONDS; a request that failed (any 4xx or 5xx) frees its key, so a retry
  runs again (nothing was queued).
- A streamed body (the CSV upload) is not read twice: its fingerprint holds the method, path,
  query and organization, and the content's SHA-256 is computed as the upload streams into the
  file store and stored with the response. A retry of a finished upload is read and hashed again
  (bounded like the upload, kept nowhere) and replayed only if the content is the same.

The keys live in the result backend's Redis database beside the task owners, named
`erp:idempotency:{user_id}:{sha256 of the key}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import redis.asyncio as redis
from fastapi import Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel

from erp.core import broker
from erp.core.broker_wire import BROKER_ERRORS
from erp.core.caller import Caller
from erp.core.config import get_settings
from erp.core.dispatch import BROKER_TIMEOUT_SECONDS, within_deadline
from erp.core.http_errors import raises

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
# Visible ASCII, as HTTP field values allow without quoting; a UUID is what clients usually send.
KEY_PATTERN = r"^[!-~]+$"
KEY_MAX_LENGTH = 255
REDIS_KEY = "erp:idempotency:{user_id}:{key_digest}"
REPLAYED_HEADER = "Idempotent-Replayed"
# How long a claim outlives the web process that made it; renewed every third of it meanwhile.
LEASE_SECONDS = 30
M = TypeVar("M", bound=BaseModel)

# One round trip each, so that two requests cannot both claim a key, and a request completes or
# frees only the claim it made (a claim that expired and was taken by a retry is left alone).
_CLAIM = """
local found = redis.call('HGETALL', KEYS[1])
if #found > 0 then return found end
redis.call('HSET', KEYS[1], 'state', 'in_progress', 'owner', ARGV[1], 'fingerprint', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {}
"""
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[2], 'content_digest', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
_RENEW = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'in_progress' then
  return 0
end
return redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'in_progress' then
  return 0
end
return redis.call('DEL', KEYS[1])
"""


@functools.cache
def _client() -> redis.Redis:
    return broker.connect(get_settings().result_backend_url)


async def _eval(script: str, redis_key: str, *args: str | int) -> Any:
    """Run one of the scripts above on `redis_key`: one round trip, atomic."""
    return await _client().eval(script, 1, redis_key, *(str(arg) for arg in args))  # type: ignore[misc]


async def close() -> None:
    if _client.cache_info().currsize:
        await _client().aclose()


def fingerprint(method: str, path: str, query: str, organization_id: int | None, body_digest: str) -> str:
    """What makes two requests the same request: SHA-256 over its parts, each on a line of its own."""
    parts = (method.upper(), path, query, "" if organization_id is None else str(organization_id), body_digest)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


Verdict = Literal["claimed", "replay", "in_progress", "other_request"]


def judge(found: dict[str, str], request_fingerprint: str, content_digest: str | None = None) -> Verdict:
    """What a request does with what its key already holds (empty: the request claimed it).

    `content_digest` is a streamed body's SHA-256, once read; None for a request whose body is in
    its fingerprint, or a streamed one not read yet (then a finished record is `replay` pending
    the content's check).
    """
    if not found:
        return "claimed"
    if found.get("fingerprint") != request_fingerprint:
        return "other_request"
    if found.get("state") != "done":
        return "in_progress"
    stored_digest = found.get("content_digest") or None
    if content_digest is not None and stored_digest != content_digest:
        return "other_request"
    return "replay"


def _refusal(verdict: Verdict) -> HTTPException:
    ttl = get_settings().IDEMPOTENCY_KEY_TTL_SECONDS
    if verdict == "in_progress":
        return HTTPException(
            409,
            f"a request with this {HEADER} is still being processed: retry in a moment for its response",
            headers={"Retry-After": "1"},
        )
    return HTTPException(
        422,
        f"this {HEADER} was used for a different request (method, path, query, organization or body) "
        f"in the last {ttl} s: send a new key with a new request",
    )


@dataclass
class _Claim:
    redis_key: str
    owner: str

    async def renew_meanwhile(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.wait_for(
                    _eval(_RENEW, self.redis_key, self.owner, LEASE_SECONDS),
                    BROKER_TIMEOUT_SECONDS,
                )

    async def complete(self, response: BaseModel, content_digest: str = "") -> None:
        """Store the response under the key. The work is queued by now, so a Redis that fails
        here does not turn the answer into an error: the client gets its 202, and a retry after
        the lease would run again (logged)."""
        ttl = get_settings().IDEMPOTENCY_KEY_TTL_SECONDS
        try:
            await asyncio.wait_for(
                _eval(_COMPLETE, self.redis_key, self.owner, response.model_dump_json(), content_digest, ttl),
                BROKER_TIMEOUT_SECONDS,
            )
        except BROKER_ERRORS as error:
            logger.warning(
                "idempotency key: the response could not be stored (%s); a retry after %s s runs again",
                type(error).__name__,
                LEASE_SECONDS,
                extra={"action": "idempotency.not_stored"},
            )

    async def release(self) -> None:
        """Free the key after a failed request: a retry runs again. Best effort: else it expires."""
        with contextlib.suppress(*BROKER_ERRORS):
            await asyncio.wait_for(
                _eval(_RELEASE, self.redis_key, self.owner),
                BROKER_TIMEOUT_SECONDS,
            )


class Idempotency:
    """The `Idempotency-Key` of one request (or none), and how to run its work at most once."""

    def __init__(self, request: Request, response: Response, key: str | None) -> None:
        self.request = request
        self.response = response
        self.key = key

    async def once(
        self,
        caller: Caller,
        model: type[M],
        produce: Callable[[], Awaitable[M]],
        *,
        body_digest: str | None = None,
    ) -> M:
        """`produce()`'s response, or the stored response of the first request with this key.

        `body_digest` stands for the body in the fingerprint where the raw body is not what makes
        two requests the same (the console's form: its fields as the API's schema read them, not
        the bytes that carry them); by default, the SHA-256 of the body as sent."""
        if self.key is None:
            return await produce()
        if body_digest is None:
            body = await self.request.body()  # already read and kept by FastAPI for a JSON body
            body_digest = hashlib.sha256(body).hexdigest()
        request_fingerprint = self._fingerprint(caller, body_digest)
        found, claim = await self._claim(caller, request_fingerprint)
        if claim is None:
            return self._answer(model, found, judge(found, request_fingerprint))
        result = await self._run(claim, produce)
        await claim.complete(result)
        return result

    async def once_streamed(
        self,
        caller: Caller,
        model: type[M],
        body: AsyncIterator[bytes],
        produce: Callable[[AsyncIterator[bytes]], Awaitable[M]],
        *,
        max_bytes: int,
    ) -> M:
        """The same for a body read as a stream: `produce(body)` reads it, hashed on the way."""
        if self.key is None:
            return await produce(body)
        request_fingerprint = self._fingerprint(caller, "streamed")
        found, claim = await self._claim(caller, request_fingerprint)
        if claim is None:
            verdict = judge(found, request_fingerprint)
            if verdict == "replay":
                # The same request, finished: replayed only for the same content.
                verdict = judge(found, request_fingerprint, await _digest_of(body, max_bytes))
            return self._answer(model, found, verdict)
        digest = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in body:
                digest.update(chunk)
                yield chunk

        stream = hashed()
        result = await self._run(claim, lambda: produce(stream))
        async for _ in stream:  # whatever `produce` left unread belongs to the content too
            pass
        await claim.complete(result, digest.hexdigest())
        return result

    def _fingerprint(self, caller: Caller, body_digest: str) -> str:
        url = self.request.url
        return fingerprint(self.request.method, url.path, url.query, caller.organization_id, body_digest)

    async def _claim(self, caller: Caller, request_fingerprint: str) -> tuple[dict[str, str], _Claim | None]:
        """Claim the key for this request, or what it already holds (and no claim)."""
        assert self.key is not None
        key_digest = hashlib.sha256(self.key.encode()).hexdigest()
        redis_key = REDIS_KEY.format(user_id=caller.user_id, key_digest=key_digest)
        owner = secrets.token_hex(16)
        raw: list[str] = await within_deadline(_eval(_CLAIM, redis_key, owner, request_fingerprint, LEASE_SECONDS))
        found = dict(zip(raw[::2], raw[1::2], strict=True))
        return found, (_Claim(redis_key, owner) if not found else None)

    async def _run(self, claim: _Claim, produce: Callable[[], Awaitable[M]]) -> M:
        renewing = asyncio.create_task(claim.renew_meanwhile())
        try:
            return await produce()
        except BaseException:
            await claim.release()
            raise
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    def _answer(self, model: type[M], found: dict[str, str], verdict: Verdict) -> M:
        extra = {"action": f"idempotency.{verdict}", "path": self.request.url.path}
        if verdict != "replay":
            logger.info("idempotency key refused (%s)", verdict, extra=extra)
            raise _refusal(verdict)
        logger.info("idempotency key replayed the first response", extra=extra)
        self.response.headers[REPLAYED_HEADER] = "true"
        return model.model_validate_json(found["response"])


async def _digest_of(body: AsyncIterator[bytes], max_bytes: int) -> str:
    digest = hashlib.sha256()
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"the body is larger than {max_bytes} bytes")
        digest.update(chunk)
    return digest.hexdigest()


@raises(409)
async def idempotency_key(
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=KEY_MAX_LENGTH,
            pattern=KEY_PATTERN,
            description=(
                "Any unique string (a UUID) chosen by the client. The same key from the same user "
                "within IDEMPOTENCY_KEY_TTL_SECONDS answers with the first request's response and "
                "queues nothing; a different request under it is a 422; while the first is still "
                "being processed, a 409 with Retry-After."
            ),
            examples=["8e03978e-40d5-43e8-bc93-6894a57f9324"],
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(request, response, idempotency_key)


IdempotencyKey = Annotated[Idempotency, Depends(idempotency_key)]

# For a route's `responses=`: the header a replayed answer carries, in the OpenAPI document.
REPLAYED_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "headers": {
            REPLAYED_HEADER: {
                "description": f"`true` when this is the stored response of an earlier request with the same {HEADER}",
                "schema": {"type": "string", "enum": ["true"]},
            }
        }
    }
}
