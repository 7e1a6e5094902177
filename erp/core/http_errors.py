"""One error shape for the whole API: `{"error": {"code", "message", "details"}}`.

Also where the OpenAPI document learns which error statuses an operation can answer. Besides
what a route declares (`responses=error_responses(404, 409)`), `document_error_statuses` adds
what follows from how the route is built, so no route can forget them:

- every operation: 500 (an unexpected error, answered in the same shape and logged);
- a request body: 400 (not UTF-8, not JSON), 422 (does not match the schema), and the edge's
  413 (too large) and 408 (stalled) from erp.core.request_bodies;
- any parameter: 422, in this shape rather than FastAPI's default `{"detail": [...]}`;
- each dependency marked with `@raises(...)`, however deep: e.g. the authentication
  dependencies' 401, and 400/403/404 for the organization header.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from erp.core.errors import ConflictError, InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}
_DESCRIPTIONS = {
    400: "bad request: a body that is not UTF-8 or not JSON, a malformed header, or an organization to choose",
    408: "the request body stalled (HTTP_BODY_READ_TIMEOUT_SECONDS, HTTP_BODY_MIN_BYTES_PER_SECOND)",
    413: "the request body is larger than the endpoint accepts (HTTP_MAX_BODY_BYTES unless documented)",
    429: "too many: a rate or a limit on work under way (the message names its setting); Retry-After says when to try again",
    500: "unexpected error (logged with its traceback)",
}
UNEXPECTED_ERROR_MESSAGE = "an unexpected error occurred; it has been logged"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorBody


class _ErrorJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            # A message quoting input that holds an unpaired surrogate (JSON's "\ud800"): escaped
            # rather than failing the answer that explains the input was wrong.
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_response(
    status_code: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=_CODES.get(status_code, "error"), message=message, details=details))
    return _ErrorJSONResponse(body.model_dump(), status_code=status_code, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def _validation_detail(error: Any) -> dict[str, str]:
    if error["type"] == "json_invalid":
        # FastAPI reports the character offset as the location ("body.9"): say what it is.
        position = error["loc"][-1]
        reason = error.get("ctx", {}).get("error", "JSON decode error")
        return {"location": "body", "message": f"not valid JSON: {reason} at character {position}"}
    return {"location": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}


async def _validation_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [_validation_detail(error) for error in exc.errors()]
    summary = "; ".join(f"{item['location']}: {item['message']}" for item in details)
    return error_response(422, f"invalid request: {summary}", details)


DOMAIN_ERROR_STATUS = {NotFoundError: 404, ConflictError: 409, InvalidInputError: 422}


async def _domain_exception(request: Request, exc: Exception) -> JSONResponse:
    status_code = next(code for kind, code in DOMAIN_ERROR_STATUS.items() if isinstance(exc, kind))
    return error_response(status_code, str(exc))


class UnexpectedErrors:
    """ASGI middleware: an exception no handler turned into an answer becomes a JSON 500.

    Starlette's own catch-all answers in plain text and re-raises, so the server logs the
    traceback in its format; here it is logged once, through our logging (secrets masked), and
    the client gets the API's error shape. It sits inside Starlette's ServerErrorMiddleware,
    which still catches anything raised after the answer has started.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            if started:
                raise
            logger.exception(
                "unexpected error answering %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"action": "http.unexpected_error"},
            )
            await error_response(500, UNEXPECTED_ERROR_MESSAGE)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_exception)
    for kind in DOMAIN_ERROR_STATUS:
        app.add_exception_handler(kind, _domain_exception)
    app.add_middleware(UnexpectedErrors)
    document_error_statuses(app)


def _describe(status: int) -> str:
    return _DESCRIPTIONS.get(status, _CODES[status].replace("_", " "))


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """For `responses=` in route declarations, so OpenAPI documents the error shape."""
    return {status: {"model": ErrorResponse, "description": _describe(status)} for status in status_codes}


# Dependency callables -> the error statuses they answer with (see `raises`).
_DEPENDENCY_STATUSES: dict[Callable[..., Any], frozenset[int]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def raises(*status_codes: int) -> Callable[[F], F]:
    """Mark a dependency with the error statuses it answers; every route using it documents them."""

    def mark(dependency: F) -> F:
        _DEPENDENCY_STATUSES[dependency] = frozenset(status_codes)
        return dependency

    return mark


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def route_error_statuses(route: APIRoute) -> set[int]:
    """The error statuses `route` can answer because of how it is built (see the module doc)."""
    statuses = {500}
    if route.body_field is not None:
        statuses |= {400, 408, 413, 422}
    if get_flat_params(route.dependant):
        statuses.add(422)
    for sub in _dependencies(route.dependant):
        if sub.call is not None:
            statuses |= _DEPENDENCY_STATUSES.get(sub.call, frozenset())
    return statuses


_ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": dict(_ERROR_SCHEMA_REF)}}


def _add_error_statuses(app: FastAPI, schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("ErrorResponse", error_schema)
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            operation = schema["paths"][route.path_format][method.lower()]
            responses = operation.setdefault("responses", {})
            for status in sorted(route_error_statuses(route)):
                documented = responses.get(str(status))
                # FastAPI's own 422 describes its default body, which our handler replaces.
                if documented is None or "HTTPValidationError" in json.dumps(documented):
                    responses[str(status)] = {"description": _describe(status), "content": _error_content()}
    if "HTTPValidationError" not in json.dumps(schema["paths"]):
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            components.pop(name, None)
    _integer_bounds_as_integers(schema)


def _integer_bounds_as_integers(node: Any) -> None:
    """FastAPI's document models hold bounds as floats (9.223372036854776e+18); an integer's are
    written back as integers, so clients and generated tests read the exact bound."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if isinstance(node.get(key), float) and node[key].is_integer():
                    node[key] = int(node[key])
        for value in node.values():
            _integer_bounds_as_integers(value)
    elif isinstance(node, list):
        for value in node:
            _integer_bounds_as_integers(value)


def document_error_statuses(app: FastAPI) -> None:
    """Make `app`'s OpenAPI document list every error status its operations can answer."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_error_statuses(app, generate())  # FastAPI's document, which it keeps and serves
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
