"""Token lifetimes and lineage, what superusers do to accounts, and the account audit log,
through the real app and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from erp.core import tokens
from erp.core.config import get_settings


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def mint(api_client, headers: dict[str, str], name: str = "minted", **body) -> dict:
    response = api_client.post("/api/v1/me/tokens", json={"name": name, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def my_token_id(api_client, headers: dict[str, str], name: str = "test") -> int:
    return next(row["id"] for row in api_client.get("/api/v1/me/tokens", headers=headers).json() if row["name"] == name)


@pytest.fixture
def superuser(clean_tables, make_user):
    return make_user(role=None, superuser=True)


# --- lifetimes --------------------------------------------------------------------------------


def test_a_token_asked_without_an_expiry_gets_the_default_lifetime(api_client, clean_tables, make_user):
    user = make_user()
    created = mint(api_client, user.headers)
    assert created["expires_at"] is not None
    lifetime = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(created["created_at"])
    assert abs(lifetime - timedelta(days=get_settings().API_TOKEN_DEFAULT_LIFETIME_DAYS)) < timedelta(minutes=1)


def test_an_expiry_beyond_the_maximum_lifetime_is_a_422_naming_the_field(api_client, clean_tables, make_user):
    user = make_user()
    too_long = get_settings().API_TOKEN_MAX_LIFETIME_DAYS + 1
    response = api_client.post(
        "/api/v1/me/tokens", json={"name": "forever", "expires_in_days": too_long}, headers=user.headers
    )
    assert response.status_code == 422, response.text
    assert "expires_in_days" in response.json()["error"]["message"]
    assert [row["name"] for row in api_client.get("/api/v1/me/tokens", headers=user.headers).json()] == ["test"]


def test_a_minted_token_never_outlives_the_token_that_made_it(api_client, clean_tables, make_user, sync_engine):
    user = make_user()
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE api_tokens SET expires_at = now() + interval '2 days'"))
    child = mint(api_client, user.headers, expires_in_days=30)
    assert datetime.fromisoformat(child["expires_at"]) - datetime.fromisoformat(child["created_at"]) <= timedelta(
        days=2
    )


# --- lineage ----------------------------------------------------------------------------------


def test_revoking_a_token_revokes_every_token_made_with_it(api_client, clean_tables, make_user):
    user = make_user()
    child = mint(api_client, user.headers, "child")
    grandchild = mint(api_client, bearer(child["token"]), "grandchild")
    assert child["parent_token_id"] == my_token_id(api_client, user.headers)
    assert grandchild["parent_token_id"] == child["id"]
    # The thief's favourite: mint a spare with the stolen token; the owner revokes the stolen one.
    revoked = api_client.delete(f"/api/v1/me/tokens/{my_token_id(api_client, user.headers)}", headers=user.headers)
    assert revoked.status_code == 204
    for secret in (user.token, child["token"], grandchild["token"]):
        response = api_client.get("/api/v1/me", headers=bearer(secret))
        assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_a_token_whose_parent_is_revoked_stops_working(api_client, clean_tables, make_user, sync_engine):
    """Revoked by plain SQL, not through the service: the check is at authentication too."""
    user = make_user()
    child = mint(api_client, user.headers, "child")
    grandchild = mint(api_client, bearer(child["token"]), "grandchild")
    with sync_engine.begin() as connection:
        connection.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE id = :id"), {"id": child["id"]})
    assert api_client.get("/api/v1/me", headers=user.headers).status_code == 200
    response = api_client.get("/api/v1/me", headers=bearer(grandchild["token"]))
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_revoking_a_child_leaves_its_parent_working(api_client, clean_tables, make_user):
    user = make_user()
    child = mint(api_client, user.headers, "child")
    assert api_client.delete(f"/api/v1/me/tokens/{child['id']}", headers=user.headers).status_code == 204
    assert api_client.get("/api/v1/me", headers=user.headers).status_code == 200
    assert api_client.get("/api/v1/me", headers=bearer(child["token"])).status_code == 401


def test_a_token_a_superuser_makes_for_a_user_is_tied_to_the_superusers_token(api_client, superuser, make_user):
    member = make_user()
    made = api_client.post(
        f"/api/v1/admin/users/{member.user_id}/tokens", json={"name": "issued"}, headers=superuser.headers
    ).json()
    assert api_client.get("/api/v1/me", headers=bearer(made["token"])).status_code == 200
    own_id = my_token_id(api_client, superuser.headers)
    assert made["parent_token_id"] == own_id
    assert api_client.delete(f"/api/v1/me/tokens/{own_id}", headers=superuser.headers).status_code == 204
    assert api_client.get("/api/v1/me", headers=bearer(made["token"])).status_code == 401


# --- superusers manage accounts ---------------------------------------------------------------


def test_superusers_list_and_revoke_a_users_tokens(api_client, superuser, make_user):
    member = make_user()
    child = mint(api_client, member.headers, "laptop")
    listed = api_client.get(f"/api/v1/admin/users/{member.user_id}/tokens", headers=superuser.headers)
    assert listed.status_code == 200
    assert {row["name"] for row in listed.json()} == {"test", "laptop"}
    assert all("token" not in row and "token_hash" not in row for row in listed.json())
    root_id = my_token_id(api_client, member.headers)
    revoked = api_client.delete(f"/api/v1/admin/users/{member.user_id}/tokens/{root_id}", headers=superuser.headers)
    assert revoked.status_code == 204
    assert api_client.get("/api/v1/me", headers=member.headers).status_code == 401
    assert api_client.get("/api/v1/me", headers=bearer(child["token"])).status_code == 401
    # Another user's token under this user's path is as missing as no token at all.
    other = make_user()
    other_id = my_token_id(api_client, other.headers)
    wrong_user = api_client.delete(f"/api/v1/admin/users/{member.user_id}/tokens/{other_id}", headers=superuser.headers)
    assert wrong_user.status_code == 404
    assert api_client.get("/api/v1/admin/users/987654/tokens", headers=superuser.headers).status_code == 404
    assert api_client.get(f"/api/v1/admin/users/{member.user_id}/tokens", headers=member.headers).status_code == 401
    assert api_client.get(f"/api/v1/admin/users/{other.user_id}/tokens", headers=other.headers).status_code == 403


def test_a_deactivated_users_tokens_stop_working_at_once(api_client, superuser, make_user):
    member = make_user()
    child = mint(api_client, member.headers, "laptop")
    deactivated = api_client.post(f"/api/v1/admin/users/{member.user_id}/deactivate", headers=superuser.headers)
    assert deactivated.status_code == 200 and deactivated.json()["is_active"] is False
    for secret in (member.token, child["token"]):
        response = api_client.get("/api/v1/me", headers=bearer(secret))
        assert response.status_code == 401
    # Activated again, the user needs a new token: the old ones were revoked with the deactivation.
    activated = api_client.post(f"/api/v1/admin/users/{member.user_id}/activate", headers=superuser.headers)
    assert activated.status_code == 200 and activated.json()["is_active"] is True
    assert api_client.get("/api/v1/me", headers=member.headers).status_code == 401
    tokens_now = api_client.get(f"/api/v1/admin/users/{member.user_id}/tokens", headers=superuser.headers).json()
    assert all(row["revoked_at"] is not None for row in tokens_now)


def test_a_superuser_cannot_deactivate_itself(api_client, superuser):
    response = api_client.post(f"/api/v1/admin/users/{superuser.user_id}/deactivate", headers=superuser.headers)
    assert response.status_code == 409
    assert api_client.get("/api/v1/me", headers=superuser.headers).status_code == 200


def test_superusers_remove_a_membership(api_client, superuser, make_user):
    member = make_user(role="member", organization="Acme")
    path = f"/api/v1/admin/organizations/{member.organization_id}/members/{member.user_id}"
    assert api_client.delete(path, headers=superuser.headers).status_code == 204
    assert api_client.get("/api/v1/me", headers=member.headers).json()["memberships"] == []
    imports = f"/api/v1/organizations/{member.organization_id}/imports/1"
    assert api_client.get(imports, headers=member.headers).status_code == 403
    assert api_client.delete(path, headers=superuser.headers).status_code == 404
    assert api_client.delete(path, headers=member.headers).status_code == 403


# --- the account audit log --------------------------------------------------------------------


def test_every_account_change_is_recorded_with_who_what_and_when(api_client, superuser, sync_engine):
    headers = superuser.headers
    organization = api_client.post("/api/v1/admin/organizations", json={"name": "Acme"}, headers=headers).json()
    user = api_client.post("/api/v1/admin/users", json={"email": "ada@example.com"}, headers=headers).json()
    members = f"/api/v1/admin/organizations/{organization['id']}/members"
    assert api_client.post(members, json={"user_id": user["id"], "role": "admin"}, headers=headers).status_code == 201
    issued = api_client.post(f"/api/v1/admin/users/{user['id']}/tokens", json={"name": "first"}, headers=headers)
    minted = mint(api_client, bearer(issued.json()["token"]), "second")
    assert api_client.delete(f"/api/v1/me/tokens/{minted['id']}", headers=bearer(issued.json()["token"])).status_code
    assert api_client.delete(f"{members}/{user['id']}", headers=headers).status_code == 204
    assert api_client.post(f"/api/v1/admin/users/{user['id']}/deactivate", headers=headers).status_code == 200
    assert api_client.post(f"/api/v1/admin/users/{user['id']}/activate", headers=headers).status_code == 200

    changes = api_client.get("/api/v1/admin/account-changes", headers=headers)
    assert changes.status_code == 200
    rows = list(reversed(changes.json()))  # newest first
    assert [row["action"] for row in rows] == [
        "organization.create",
        "user.create",
        "membership.add",
        "token.create",
        "token.create",
        "token.revoke",
        "membership.remove",
        "user.deactivate",
        "user.activate",
    ]
    assert all(datetime.fromisoformat(row["changed_at"]) for row in rows)
    by_superuser = [row for row in rows if row["actor_user_id"] == superuser.user_id]
    assert len(by_superuser) == 7 and {row["actor_email"] for row in by_superuser} == {
        api_client.get("/api/v1/me", headers=headers).json()["user"]["email"]
    }
    assert rows[4]["actor_user_id"] == rows[5]["actor_user_id"] == user["id"]  # the user minted and revoked
    assert rows[2]["subject_user_id"] == user["id"] and rows[2]["organization_id"] == organization["id"]
    assert rows[2]["changes"] == {"role": [None, "admin"]}
    assert rows[3]["token_id"] == issued.json()["id"] and rows[3]["changes"]["name"] == [None, "first"]
    assert rows[7]["changes"]["is_active"] == [True, False]
    # Filters: one user's changes, one organization's.
    for_user = api_client.get(f"/api/v1/admin/account-changes?user_id={user['id']}", headers=headers).json()
    assert {row["subject_user_id"] for row in for_user} == {user["id"]} and len(for_user) == 8
    for_org = api_client.get(
        f"/api/v1/admin/account-changes?organization_id={organization['id']}", headers=headers
    ).json()
    assert [row["action"] for row in for_org] == ["membership.remove", "membership.add", "organization.create"]
    assert len(api_client.get("/api/v1/admin/account-changes?limit=2", headers=headers).json()) == 2
    # No secret is kept in the log: neither a token nor its digest.
    with sync_engine.connect() as connection:
        dump = " ".join(str(row) for row in connection.execute(text("SELECT * FROM account_changes")))
    for secret in (issued.json()["token"], minted["token"]):
        assert secret not in dump and tokens.token_digest(secret) not in dump
        assert secret[:12] not in dump


def test_the_account_log_is_for_superusers_only(api_client, clean_tables, make_user):
    org_admin = make_user(role="admin")
    response = api_client.get("/api/v1/admin/account-changes", headers=org_admin.headers)
    assert response.status_code == 403


def test_account_changes_are_logged_without_secrets(api_client, clean_tables, make_user, caplog):
    user = make_user()
    with caplog.at_level(logging.INFO, logger="erp.accounts"):
        child = mint(api_client, user.headers, "laptop")
        assert api_client.delete(f"/api/v1/me/tokens/{child['id']}", headers=user.headers).status_code == 204
    actions = [getattr(record, "action", None) for record in caplog.records]
    assert "accounts.token.create" in actions and "accounts.token.revoke" in actions
    logged = caplog.text + " ".join(str(vars(record)) for record in caplog.records)
    for secret in (user.token, child["token"]):
        assert secret not in logged and tokens.token_digest(secret) not in logged and secret[:12] not in logged


def test_a_token_made_while_its_parent_is_being_revoked_is_revoked_with_it(
    api_client, clean_tables, make_user, sync_engine
):
    """A mint holds its parent FOR SHARE until it commits; the revocation waits for it, then
    looks for descendants in a statement of its own, which sees the new token."""
    user = make_user()
    parent_id = my_token_id(api_client, user.headers)
    secret = tokens.new_token()
    answers: list[int] = []
    revocation = threading.Thread(
        target=lambda: answers.append(
            api_client.delete(f"/api/v1/me/tokens/{parent_id}", headers=user.headers).status_code
        )
    )
    with sync_engine.connect() as minting, minting.begin():
        minting.execute(text("SELECT id FROM api_tokens WHERE id = :id FOR SHARE"), {"id": parent_id})
        revocation.start()
        deadline = time.monotonic() + 10
        # pg_stat_activity is read once per transaction: a transaction of its own for each look.
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND starts_with(query, 'UPDATE api_tokens SET revoked_at')"
        )
        while True:
            with sync_engine.connect() as watcher:
                if watcher.execute(waiting).scalar():
                    break
            assert time.monotonic() < deadline, "the revocation never waited for the mint"
            time.sleep(0.02)
        minting.execute(
            text(
                "INSERT INTO api_tokens (user_id, parent_token_id, name, prefix, token_hash, expires_at)"
                " VALUES (:user, :parent, 'racing', :prefix, :hash, now() + interval '1 day')"
            ),
            {
                "user": user.user_id,
                "parent": parent_id,
                "prefix": tokens.display_prefix(secret),
                "hash": tokens.token_digest(secret),
            },
        )
    revocation.join(10)
    assert answers == [204]
    with sync_engine.connect() as connection:
        revoked_at = connection.execute(text("SELECT revoked_at FROM api_tokens WHERE name = 'racing'")).scalar()
    assert revoked_at is not None
