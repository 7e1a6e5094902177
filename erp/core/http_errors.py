"""One error shape for the whole API: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from erp.core.errors import ConflictError, InvalidInputError, NotFoundError

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    503: "service_unavailable",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorBody


def error_response(
    status_code: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=_CODES.get(status_code, "error"), message=message, details=details))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _validation_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"location": ".".join(str(part) for part in error["loc"]), "message": error["msg"]} for error in exc.errors()
    ]
    summary = "; ".join(f"{item['location']}: {item['message']}" for item in details)
    return error_response(422, f"invalid request: {summary}", details)


DOMAIN_ERROR_STATUS = {NotFoundError: 404, ConflictError: 409, InvalidInputError: 422}


async def _domain_exception(request: Request, exc: Exception) -> JSONResponse:
    status_code = next(code for kind, code in DOMAIN_ERROR_STATUS.items() if isinstance(exc, kind))
    return error_response(status_code, str(exc))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_exception)
    for kind in DOMAIN_ERROR_STATUS:
        app.add_exception_handler(kind, _domain_exception)


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """For `responses=` in route declarations, so OpenAPI documents the error shape."""
    return {
        status: {"model": ErrorResponse, "description": _CODES[status].replace("_", " ")} for status in status_codes
    }
