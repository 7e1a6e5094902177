"""Accounts, tokens and the auth dependencies, through the real app and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from erp.core import tokens
from tests.support.environment import TEST_ENV
from tests.support.processes import REPO_ROOT


@pytest.fixture
def superuser(clean_tables, make_user):
    return make_user(role=None, superuser=True)


def test_no_bad_or_malformed_token_is_401_with_a_reason(api_client, clean_tables):
    missing = api_client.get("/api/v1/me")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "missing Authorization header" in missing.json()["error"]["message"]
    malformed = api_client.get("/api/v1/me", headers={"Authorization": "Token abc"})
    assert malformed.status_code == 401 and "expected 'Bearer <API token>'" in malformed.json()["error"]["message"]
    unknown = api_client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens.new_token()}"})
    assert unknown.status_code == 401 and unknown.json()["error"]["message"] == "unknown token"


def test_me_shows_the_user_and_memberships(api_client, clean_tables, make_user):
    member = make_user(role="admin", organization="Acme")
    body = api_client.get("/api/v1/me", headers=member.headers).json()
    assert body["user"]["id"] == member.user_id
    assert body["memberships"] == [
        {"organization_id": member.organization_id, "organization_name": "Acme", "role": "admin"}
    ]


def test_a_token_is_shown_once_stored_hashed_and_revocable(api_client, clean_tables, make_user, sync_engine):
    user = make_user()
    created = api_client.post("/api/v1/me/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=user.headers)
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("erp_") and created.json()["expires_at"] is not None
    with sync_engine.connect() as connection:
        dump = " ".join(str(row) for row in connection.execute(text("SELECT * FROM api_tokens")))
    assert secret not in dump and tokens.token_digest(secret) in dump
    listed = api_client.get("/api/v1/me/tokens", headers=user.headers).json()
    assert all("token" not in row for row in listed) and {row["name"] for row in listed} == {"test", "laptop"}
    new_headers = {"Authorization": f"Bearer {secret}"}
    assert api_client.get("/api/v1/me", headers=new_headers).status_code == 200
    assert api_client.delete(f"/api/v1/me/tokens/{created.json()['id']}", headers=user.headers).status_code == 204
    revoked = api_client.get("/api/v1/me", headers=new_headers)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


def test_someone_elses_token_cannot_be_revoked(api_client, clean_tables, make_user):
    owner, other = make_user(), make_user()
    token_id = api_client.get("/api/v1/me/tokens", headers=owner.headers).json()[0]["id"]
    assert api_client.delete(f"/api/v1/me/tokens/{token_id}", headers=other.headers).status_code == 404


def test_an_expired_token_is_refused(api_client, clean_tables, make_user, sync_engine):
    user = make_user()
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE api_tokens SET expires_at = now() - interval '1 second'"))
    response = api_client.get("/api/v1/me", headers=user.headers)
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_a_deactivated_user_is_refused(api_client, clean_tables, make_user, sync_engine):
    user = make_user()
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE users SET is_active = false"))
    assert "deactivated" in api_client.get("/api/v1/me", headers=user.headers).json()["error"]["message"]


def test_superusers_manage_organizations_users_and_members(api_client, superuser):
    headers = superuser.headers
    org = api_client.post("/api/v1/admin/organizations", json={"name": "Acme"}, headers=headers)
    assert org.status_code == 201
    assert api_client.post("/api/v1/admin/organizations", json={"name": "Acme"}, headers=headers).status_code == 409
    assert [o["name"] for o in api_client.get("/api/v1/admin/organizations", headers=headers).json()] == ["Acme"]
    user = api_client.post(
        "/api/v1/admin/users", json={"email": "Ada@Example.com", "full_name": "Ada"}, headers=headers
    )
    assert user.status_code == 201 and user.json()["email"] == "ada@example.com"
    assert api_client.post("/api/v1/admin/users", json={"email": "ada@example.com"}, headers=headers).status_code == 409
    bad_email = api_client.post("/api/v1/admin/users", json={"email": "not an email"}, headers=headers)
    assert bad_email.status_code == 422 and "email" in bad_email.json()["error"]["message"]
    members_url = f"/api/v1/admin/organizations/{org.json()['id']}/members"
    added = api_client.post(members_url, json={"user_id": user.json()["id"], "role": "admin"}, headers=headers)
    assert added.status_code == 201 and added.json()["role"] == "admin"
    assert api_client.post(members_url, json={"user_id": user.json()["id"]}, headers=headers).status_code == 409
    assert api_client.post(members_url, json={"user_id": 999999}, headers=headers).status_code == 404
    assert (
        api_client.post(members_url, json={"user_id": user.json()["id"], "role": "owner"}, headers=headers).status_code
        == 422
    )
    token = api_client.post(f"/api/v1/admin/users/{user.json()['id']}/tokens", json={"name": "first"}, headers=headers)
    me = api_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token.json()['token']}"}).json()
    assert me["user"]["email"] == "ada@example.com" and me["memberships"][0]["organization_name"] == "Acme"


def test_admin_routes_are_403_for_non_superusers(api_client, clean_tables, make_user):
    org_admin = make_user(role="admin")
    for method, path in (("get", "/api/v1/admin/organizations"), ("post", "/api/v1/admin/users")):
        response = getattr(api_client, method)(
            path, headers=org_admin.headers, **({"json": {"email": "x@y.io"}} if method == "post" else {})
        )
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_the_organization_comes_from_the_header_or_the_only_membership(api_client, clean_tables, make_user):
    first = make_user(role="member", organization="First")
    second = make_user(role="member", organization="Second")
    assert api_client.post("/api/v1/tasks/ping", headers=first.headers).status_code in (202, 503)
    forbidden = api_client.post(
        "/api/v1/tasks/ping", headers={**first.headers, "X-Organization-Id": str(second.organization_id)}
    )
    assert (
        forbidden.status_code == 403
        and f"not a member of organization {second.organization_id}" in forbidden.json()["error"]["message"]
    )


def test_several_memberships_without_a_header_is_a_400(api_client, clean_tables, make_user, sync_engine):
    user = make_user(role="member", organization="First")
    other = make_user(role="member", organization="Second")
    with sync_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO memberships (user_id, organization_id, role) VALUES (:user, :org, 'member')"),
            {"user": user.user_id, "org": other.organization_id},
        )
    response = api_client.post("/api/v1/tasks/ping", headers=user.headers)
    assert response.status_code == 400 and "X-Organization-Id" in response.json()["error"]["message"]
    chosen = api_client.post(
        "/api/v1/tasks/ping", headers={**user.headers, "X-Organization-Id": str(other.organization_id)}
    )
    assert chosen.status_code == 202


def test_a_superuser_may_act_in_any_existing_organization(api_client, superuser, make_user):
    member = make_user(role="member", organization="Elsewhere")
    assert (
        api_client.post(
            "/api/v1/tasks/ping", headers={**superuser.headers, "X-Organization-Id": str(member.organization_id)}
        ).status_code
        == 202
    )
    missing = api_client.post("/api/v1/tasks/ping", headers={**superuser.headers, "X-Organization-Id": "987654"})
    assert missing.status_code == 404


def test_the_cli_creates_a_superuser_whose_token_works(api_client, clean_tables, sync_engine):
    done = subprocess.run(
        [sys.executable, "-m", "erp", "create-superuser", "--email", "Root@Example.com", "--organization", "Operators"],
        env={**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert tokens.looks_like_token(secret)
    me = api_client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me["user"]["is_superuser"] and me["memberships"][0]["role"] == "admin"
    with sync_engine.connect() as connection:
        logged = connection.execute(
            text("SELECT action, actor_user_id, actor_email FROM account_changes ORDER BY id")
        ).all()
    # The command line is the actor: a null one.
    assert [tuple(row) for row in logged] == [
        ("user.create", None, None),
        ("organization.create", None, None),
        ("membership.add", None, None),
        ("token.create", None, None),
    ]
    unknown = subprocess.run(
        [sys.executable, "-m", "erp", "create-token", "--email", "nobody@example.com"],
        env={**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # 3: not found (python -m erp's exit codes, README "Command line")
    assert unknown.returncode == 3 and unknown.stderr.strip() == "erp: no user with email 'nobody@example.com'"


def test_a_superuser_in_two_organizations_needs_no_organization_header_on_admin_routes(
    api_client, clean_tables, make_user, sync_engine
):
    root = make_user(role="admin", superuser=True, organization="First")
    other = make_user(role="member", organization="Second")
    with sync_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO memberships (user_id, organization_id, role) VALUES (:user, :org, 'member')"),
            {"user": root.user_id, "org": other.organization_id},
        )
    for path in (
        "/api/v1/admin/organizations",
        "/api/v1/admin/periodic-tasks",
        "/api/v1/admin/runs",
        "/api/v1/admin/alerts",
        "/api/v1/admin/health-checks",
        "/api/v1/admin/periodic-tasks/task-names",
        f"/api/v1/admin/users/{other.user_id}/tokens",
        "/api/v1/admin/account-changes",
    ):
        response = api_client.get(path, headers=root.headers)
        assert response.status_code == 200, (path, response.text)
    created = api_client.post("/api/v1/admin/organizations", json={"name": "Third"}, headers=root.headers)
    assert created.status_code == 201
    # A header naming an organization changes nothing on admin routes, not even a missing one.
    with_header = api_client.get("/api/v1/admin/organizations", headers={**root.headers, "X-Organization-Id": "987654"})
    assert with_header.status_code == 200
    # Routes that act in an organization still ask which one.
    assert api_client.post("/api/v1/tasks/ping", headers=root.headers).status_code == 400
