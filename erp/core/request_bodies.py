"""What a request body may cost the web before the application reads it: size, time, anonymity.

`RequestBodyGuard` is pure ASGI middleware, so it acts before FastAPI, which reads and parses a
route's JSON body before any dependency (the bearer check included) runs:

- **Anonymous API requests** (`/api/v1/...` without `Authorization: Bearer <token>`) are
  answered 401 at once: their body is never read. A present but wrong token still costs at
  most one body within the limit below.
- **Size**: every route accepts at most `HTTP_MAX_BODY_BYTES`, unless it declares its own limit
  with `accepts_body_up_to` (the CSV upload: `DATA_IMPORT_MAX_UPLOAD_BYTES`). A larger
  `Content-Length` is a 413 before anything is read; a body without one (chunked) is counted as
  it streams in and cut with a 413 at the first byte over.
- **Time**: a client that stops sending, or trickles, holds a coroutine, a socket and whatever
  the route holds while it waits. Each piece of the body must arrive within
  `HTTP_BODY_READ_TIMEOUT_SECONDS`, and the whole body may take that long plus one second per
  `HTTP_BODY_MIN_BYTES_PER_SECOND` bytes received (Apache's mod_reqtimeout rule): a slower body
  is cut with a 408.

An answer given before the body was read whole asks uvicorn to close the connection
(`Connection: close`), so the rest of the body is not read either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from erp.core.config import get_settings
from erp.core.http_errors import error_response
from erp.core.tokens import CredentialsProblem, bearer_token

# Requests under this prefix need a bearer token; anything else (health, metrics, docs) decides itself.
API_PREFIX = "/api/v1/"
CLOSE = {"Connection": "close"}

F = TypeVar("F", bound=Callable[..., Any])
# Route endpoints -> (their body limit, the message for a body over it).
_ROUTE_LIMITS: dict[Callable[..., Any], tuple[Callable[[], int], Callable[[int], str] | None]] = {}


def accepts_body_up_to(limit: Callable[[], int], describe: Callable[[int], str] | None = None) -> Callable[[F], F]:
    """Mark an endpoint that takes more than HTTP_MAX_BODY_BYTES: `limit()` bytes at most.

    `describe(limit)` is the 413's message (the default names the limit in bytes). The route
    may check the body itself as well; the guard's count comes first.
    """

    def mark(endpoint: F) -> F:
        _ROUTE_LIMITS[endpoint] = (limit, describe)
        return endpoint

    return mark


class BodyRejected(HTTPException):
    """Raised from `receive` when a body streams in too large (413) or too slowly (408).

    An HTTPException, so the route's handling of it (FastAPI re-raises it from the body read,
    and the error handler answers in the API's shape) is the same wherever the body is read.
    """

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(status_code, message, headers=CLOSE)


def too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit:,} bytes, the most this endpoint accepts"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_limit(scope: Scope) -> tuple[int, Callable[[int], str]] | None:
    """The limit the matching route declared, if it declared one (looked up only for bodies
    over the default, so an ordinary request pays nothing for it)."""
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            declared = _ROUTE_LIMITS.get(getattr(route, "endpoint", _route_limit))
            if declared is None:
                return None
            limit, describe = declared
            return limit(), describe or too_large_message
    return None


class RequestBodyGuard:
    """Pure ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared_text = _header(scope, b"content-length")
        # uvicorn has already refused a Content-Length that is not a number.
        declared = int(declared_text) if declared_text is not None and declared_text.isdigit() else None
        body_pending = (declared or 0) > 0 or _header(scope, b"transfer-encoding") is not None
        close = CLOSE if body_pending else None

        if scope["path"].startswith(API_PREFIX):
            try:
                bearer_token(_header(scope, b"authorization"))
            except CredentialsProblem as problem:
                headers = {"WWW-Authenticate": "Bearer", **(close or {})}
                await error_response(401, str(problem), headers=headers)(scope, receive, send)
                return

        settings = get_settings()
        limit = settings.HTTP_MAX_BODY_BYTES
        describe: Callable[[int], str] = too_large_message
        route_limit_known = False
        if declared is not None and declared > limit:
            route_limit_known = True
            limit, describe = _route_limit(scope) or (limit, describe)
            if declared > limit:
                await error_response(413, describe(limit), headers=close)(scope, receive, send)
                return
        if not body_pending:
            await self.app(scope, receive, send)
            return

        read_timeout = settings.HTTP_BODY_READ_TIMEOUT_SECONDS
        min_rate = settings.HTTP_BODY_MIN_BYTES_PER_SECOND
        received = 0
        complete = False
        first_read_at: float | None = None

        async def guarded_receive() -> Message:
            nonlocal received, complete, first_read_at, limit, describe, route_limit_known
            if complete:
                # The body is in; what follows is waiting for a disconnect (streamed answers).
                return await receive()
            now = time.monotonic()
            if first_read_at is None:
                first_read_at = now
            deadline = first_read_at + read_timeout + received / min_rate
            wait = min(read_timeout, deadline - now)
            try:
                if wait <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise BodyRejected(
                    408,
                    f"the request body stalled: each part must arrive within {read_timeout:g} s and the "
                    f"body at {min_rate:,} bytes per second or faster ({received:,} bytes arrived)",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not route_limit_known:
                    route_limit_known = True
                    limit, describe = _route_limit(scope) or (limit, describe)
                if received > limit:
                    raise BodyRejected(413, describe(limit))
                complete = not message.get("more_body", False)
            else:
                complete = True  # disconnected
            return message

        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, watching_send)
        except BodyRejected as rejected:
            # Raised somewhere no handler answers it (outside a route's own body read): answered
            # here if nothing has been sent yet; otherwise the server ends the connection.
            if started:
                raise
            await error_response(rejected.status_code, str(rejected.detail), headers=CLOSE)(scope, receive, send)
