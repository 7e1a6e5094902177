"""Request ids: every request has one, every log line of it carries it, the response returns it.

A well-formed `X-Request-ID` from the client or the router (Heroku's router sets one) is kept,
so one id follows a request from the edge to the worker; anything else (missing, too long,
characters that could forge log fields) is replaced by a fresh one. The id travels with the
tasks the request queues as the message header `request_id` (erp.core.dispatch), so the
worker's log lines for that task carry it too.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from erp.core.broker_wire import REQUEST_ID_HEADER
from erp.core.logging import bind, log_context, unbind

HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")


def accept_or_make(value: str | None) -> str:
    """The client's id when well-formed, else a new one (32 hex digits)."""
    if value is not None and _WELL_FORMED.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return log_context().get("request_id")


def task_headers() -> dict[str, str]:
    """Message headers that carry the current request id to the worker (empty outside requests)."""
    request_id = current_request_id()
    return {REQUEST_ID_HEADER: request_id} if request_id else {}


class RequestIdMiddleware:
    """Pure ASGI middleware, so the id is in the log context of the whole request, access log included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        request_id = accept_or_make(sent.decode("latin-1") if sent is not None else None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        token = bind(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind(token)
