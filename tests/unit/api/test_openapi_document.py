"""The OpenAPI document states the API's limits and error statuses (no services needed).

A guard for new routes and fields: an input that reaches the database must say how large it may
be and that it may not hold NUL, and every error status must use the API's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from erp.api.app import create_app
from erp.core.input_types import INT32_MAX, INT64_MAX, NO_NUL_PATTERN

ERROR_REF = "#/components/schemas/ErrorResponse"
# Strings that never reach a query as text: parsed (uuid, date-time), matched against a list
# (enums), or the token and the idempotency key, which are looked up by their digests (the key's
# pattern, visible ASCII, refuses NUL anyway).
NOT_STORED = {"authorization", "if-match", "idempotency-key"}


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app().openapi()


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def leaves(document: dict, schema: dict, where: str, seen: frozenset[str] = frozenset()) -> Iterator[tuple[str, dict]]:
    """Every scalar schema inside `schema` (objects, arrays, unions and references followed)."""
    if "$ref" in schema:
        if schema["$ref"] in seen:
            return
        seen |= {schema["$ref"]}
    schema = resolve(document, schema)
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            yield from leaves(document, option, where, seen)
    for name, sub in schema.get("properties", {}).items():
        yield from leaves(document, sub, f"{where}.{name}", seen)
    if isinstance(schema.get("items"), dict):
        yield from leaves(document, schema["items"], f"{where}[]", seen)
    if schema.get("type") in ("integer", "string"):
        yield where, schema


def request_leaves(document: dict) -> Iterator[tuple[str, dict]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] not in NOT_STORED:
                    yield from leaves(document, parameter["schema"], f"{method} {path} {parameter['name']}")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                yield from leaves(document, body["schema"], f"{method} {path} body")


def test_every_integer_input_is_bounded_to_what_its_column_holds(document):
    integers = [(where, schema) for where, schema in request_leaves(document) if schema["type"] == "integer"]
    unbounded = [
        where
        for where, schema in integers
        if schema.get("maximum", INT64_MAX + 1) > INT64_MAX and schema.get("exclusiveMaximum", 2**63 + 1) > 2**63
    ]
    assert unbounded == []
    assert all(isinstance(schema.get("exclusiveMaximum", 0), int) for where, schema in integers)
    int32_columns = ("interval_id", "crontab_id", "clocked_id", "solar_id", "expire_seconds")
    assert {schema["maximum"] for where, schema in integers if where.endswith(int32_columns)} == {INT32_MAX}


def test_every_free_text_input_refuses_nul(document):
    free_text = [
        (where, schema)
        for where, schema in request_leaves(document)
        if schema["type"] == "string" and "enum" not in schema and "const" not in schema and "format" not in schema
    ]
    assert len(free_text) > 20
    # The email pattern is the email rule; its validator refuses NUL all the same (integration tests).
    missing = [where for where, schema in free_text if schema.get("pattern") != NO_NUL_PATTERN and "email" not in where]
    assert missing == []


def test_every_operation_documents_500_and_every_error_uses_the_error_shape(document):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400 and not path.startswith("/health"):
                    assert json.dumps(response).count(ERROR_REF) == 1, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_operations_with_a_body_or_the_organization_header_document_400(document):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            names = {parameter["name"] for parameter in operation.get("parameters", [])}
            # FastAPI answers 400 for a JSON body it cannot parse (a raw upload is read by the route).
            json_body = "application/json" in operation.get("requestBody", {}).get("content", {})
            if json_body or "x-organization-id" in names or "if-match" in names:
                assert "400" in operation["responses"], (method, path)


# POSTs answered 202 that queue no work: revoking stops one.
QUEUES_NOTHING = {"/api/v1/tasks/{task_id}/revoke"}


def test_every_post_that_queues_work_takes_an_idempotency_key(document):
    queuing = {
        path
        for path, methods in document["paths"].items()
        if "202" in methods.get("post", {}).get("responses", {}) and path not in QUEUES_NOTHING
    }
    assert queuing == {
        "/api/v1/tasks/ping",
        "/api/v1/organizations/{organization_id}/reports/sales",
        "/api/v1/organizations/{organization_id}/imports/sales-orders",
        "/api/v1/admin/periodic-tasks/{periodic_task_id}/run",
    }
    for path in queuing:
        operation = document["paths"][path]["post"]
        assert "idempotency-key" in {parameter["name"] for parameter in operation["parameters"]}, path
        assert {"409", "422"} <= set(operation["responses"]), path
        assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"], path
