"""Every status the API answers is in its OpenAPI document, with the error shape as its body.

The 400s here were answered but not documented: a body that is not UTF-8 or not JSON, a
non-numeric If-Match, and a caller in several organizations who sends no X-Organization-Id.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

PERIODIC = "/api/v1/admin/periodic-tasks"


@pytest.fixture(scope="module")
def document(api_client) -> dict:
    return api_client.get("/openapi.json").json()


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method.upper(), operation


def documented(document: dict, method: str, path: str) -> set[str]:
    return set(document["paths"][path][method.lower()]["responses"])


@pytest.fixture
def superuser(clean_tables, make_user):
    return make_user(role="admin", superuser=True)


@pytest.fixture
def periodic_task_id(api_client, superuser) -> int:
    body = {"name": "existing", "task": "erp.ping", "schedule": {"kind": "interval", "every": 10}}
    response = api_client.post(PERIODIC, json=body, headers=superuser.headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def concrete(path: str, superuser, periodic_task_id: int) -> str:
    return path.format(
        periodic_task_id=periodic_task_id,
        organization_id=superuser.organization_id,
        user_id=superuser.user_id,
        token_id=1,
        task_id="0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11",
    )


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b'{"name": "\xc3\x28"}', 400, "error parsing the body"),  # not UTF-8
        (b"{not json", 422, "body: not valid JSON: Expecting property name enclosed in double quotes at character 1"),
        (b'{"name": ', 422, "body: not valid JSON: Expecting value at character 9"),
    ],
)
def test_a_body_that_is_not_utf8_or_not_json_is_a_documented_error_on_every_operation_with_a_body(
    api_client, document, superuser, periodic_task_id, content, status, fragment
):
    # JSON bodies: FastAPI parses them (a raw CSV upload is read, and judged, by its route).
    with_body = [
        (path, method)
        for path, method, operation in operations(document)
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(with_body) >= 6
    for path, method in with_body:
        response = api_client.request(
            method,
            concrete(path, superuser, periodic_task_id),
            content=content,
            headers={**superuser.headers, "Content-Type": "application/json", "If-Match": '"1"'},
        )
        assert response.status_code == status, (method, path, response.text)
        assert fragment in response.json()["error"]["message"]
        assert str(status) in documented(document, method, path), (method, path)


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_a_non_numeric_if_match_is_a_documented_400(api_client, document, superuser, periodic_task_id, method):
    response = api_client.request(
        method,
        f"{PERIODIC}/{periodic_task_id}",
        json={"description": "x"} if method == "PATCH" else None,
        headers={**superuser.headers, "If-Match": '"three"'},
    )
    assert response.status_code == 400 and "If-Match" in response.json()["error"]["message"]
    assert "400" in documented(document, method, f"{PERIODIC}/{{periodic_task_id}}")


def test_a_caller_in_several_organizations_without_the_header_gets_a_documented_400_everywhere(
    api_client, document, superuser, periodic_task_id, make_user, sync_engine
):
    other = make_user(role="member")
    with sync_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO memberships (user_id, organization_id, role) VALUES (:user, :org, 'member')"),
            {"user": superuser.user_id, "org": other.organization_id},
        )
    organization_header = [
        (path, method)
        for path, method, operation in operations(document)
        if any(parameter["name"] == "x-organization-id" for parameter in operation.get("parameters", []))
    ]
    assert len(organization_header) >= 4
    # Admin routes act in no organization: they take no header and cannot answer this 400.
    assert not [path for path, method in organization_header if path.startswith("/api/v1/admin/")]
    for path, method in organization_header:
        response = api_client.request(
            method, concrete(path, superuser, periodic_task_id), headers={**superuser.headers, "If-Match": '"1"'}
        )
        assert response.status_code == 400, (method, path, response.text)
        assert "X-Organization-Id" in response.json()["error"]["message"]
        assert "400" in documented(document, method, path), (method, path)
