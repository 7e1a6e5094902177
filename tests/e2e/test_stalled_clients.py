"""Clients that stall hold no database connection or transaction, and cannot starve the others.

A real uvicorn and real sockets: uploads that send their headers and the CSV header line, then
nothing; downloads that stop reading. More of them than the web's pool has connections (10 and
10 more), and meanwhile a member of another organization must be answered at once, readiness
must say ready, and PostgreSQL must show no session of the web idle in a transaction.
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest
from sqlalchemy import text

from tests.support import raw_http
from tests.support.processes import start_web

# Alone (serial): each check gives the web a second or two, which other tests' load can use up.
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

POOL_CONNECTIONS = 20  # erp.core.db.web_engine: a pool of 10 and 10 more
STALLED = POOL_CONNECTIONS + 5
CSV_HEADER = b"order_number,order_date,customer,currency,product,quantity,unit_price\n"


@pytest.fixture(scope="module")
def web(migrated_database, redis_clean):
    # Long body timeouts: what is tested here is that a stalled body holds nothing while the
    # web waits for it, not that it is cut (tests/e2e/test_request_bodies.py).
    process, url = start_web(
        env={
            "HTTP_BODY_READ_TIMEOUT_SECONDS": "120",
            "UPLOAD_MAX_CONCURRENT_PER_USER": "100",
            "UPLOAD_MAX_CONCURRENT_PER_ORGANIZATION": "100",
        }
    )
    yield process, url
    process.stop()


def web_sessions_idle_in_transaction(sync_engine) -> int:
    with sync_engine.connect() as connection:
        return connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'erp-web%' AND state LIKE 'idle in transaction%'"
            )
        )


def others_are_served(url: str, other) -> None:
    """Another organization's member, and the readiness probe, answered well within a second."""
    with httpx.Client(base_url=url, timeout=5) as client:
        started = time.monotonic()
        me = client.get("/api/v1/me", headers=other.headers)
        assert me.status_code == 200, me.text
        assert client.get("/health/ready").status_code == 200
        assert time.monotonic() - started < 2


def test_stalled_uploads_hold_no_connection_and_no_transaction(web, clean_tables, make_user, sync_engine):
    _, url = web
    uploader, other = make_user(), make_user()
    path = f"/api/v1/organizations/{uploader.organization_id}/imports/sales-orders?filename=stalled.csv"
    headers = {"Content-Type": "text/csv", "Content-Length": "1000000", **uploader.headers}
    stalled = []
    try:
        for _ in range(STALLED):
            connection = raw_http.open_request(url, "POST", path, headers)
            connection.sendall(CSV_HEADER)  # ... and nothing more
            stalled.append(connection)
        time.sleep(1.0)  # each has been authenticated and is waiting for its body
        assert web_sessions_idle_in_transaction(sync_engine) == 0
        others_are_served(url, other)
    finally:
        for connection in stalled:
            connection.close()


def stored_report(sync_engine, organization_id: int, size: int) -> int:
    """A report file of `size` bytes in the file store, written directly."""
    chunk = os.urandom(256 * 1024)
    with sync_engine.begin() as connection:
        file_id = connection.scalar(
            text(
                "INSERT INTO files (organization_id, purpose, name, content_type, size_bytes, expires_at)"
                " VALUES (:organization_id, 'report', 'big.csv', 'text/csv', :size, now() + interval '1 hour')"
                " RETURNING id"
            ),
            {"organization_id": organization_id, "size": size},
        )
        connection.execute(
            text("INSERT INTO file_chunks (file_id, seq, data) VALUES (:file_id, :seq, :data)"),
            [{"file_id": file_id, "seq": seq, "data": chunk} for seq in range(size // len(chunk))],
        )
    return file_id


def test_downloads_that_stop_reading_hold_no_connection(web, clean_tables, make_user, sync_engine):
    _, url = web
    reader, other = make_user(), make_user()
    # Far more than the socket buffers hold, so the web waits on each reader with a chunk in hand.
    file_id = stored_report(sync_engine, reader.organization_id, 32 * 1024 * 1024)
    path = f"/api/v1/organizations/{reader.organization_id}/reports/files/{file_id}"
    stalled = []
    try:
        for _ in range(STALLED):
            host, port = url.removeprefix("http://").split(":")
            connection = socket.socket()
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            connection.connect((host, int(port)))
            connection.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {reader.token}\r\n\r\n".encode()
            )
            assert connection.recv(16).startswith(b"HTTP/1.1 200")  # ... then reads no more
            stalled.append(connection)
        time.sleep(1.0)
        others_are_served(url, other)
    finally:
        for connection in stalled:
            connection.close()


@pytest.fixture
def capped_web(migrated_database, redis_clean):
    process, url = start_web(
        env={
            "HTTP_BODY_READ_TIMEOUT_SECONDS": "120",
            "UPLOAD_MAX_CONCURRENT_PER_USER": "2",
            "UPLOAD_MAX_CONCURRENT_PER_ORGANIZATION": "3",
        }
    )
    yield url
    process.stop()


def test_concurrent_uploads_are_capped_per_user_and_per_organization(capped_web, clean_tables, make_user):
    url = capped_web
    first, second, third = (make_user(organization="Capped") for _ in range(3))
    elsewhere = make_user()
    small_csv = CSV_HEADER + b"A-1,2026-01-01,Acme,EUR,P,1,1.00\n"

    def path(user) -> str:
        return f"/api/v1/organizations/{user.organization_id}/imports/sales-orders?filename=x.csv"

    def stall(user):
        headers = {"Content-Type": "text/csv", "Content-Length": "1000000", **user.headers}
        connection = raw_http.open_request(url, "POST", path(user), headers)
        connection.sendall(CSV_HEADER)
        return connection

    def upload(client: httpx.Client, user) -> httpx.Response:
        return client.post(path(user), content=small_csv, headers={"Content-Type": "text/csv", **user.headers})

    stalled = []
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            stalled += [stall(first), stall(first)]
            time.sleep(0.5)
            refused = upload(client, first)
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "120"
            assert "you already have 2 upload(s) under way" in refused.json()["error"]["message"]

            stalled.append(stall(second))  # the organization's third
            time.sleep(0.5)
            refused = upload(client, third)
            assert refused.status_code == 429, refused.text
            assert f"organization {third.organization_id} already has 3 upload(s)" in refused.json()["error"]["message"]

            assert upload(client, elsewhere).status_code == 202  # other organizations are not held up

            for connection in stalled[:2]:  # the first user's uploads end: their slots come back
                connection.close()
            stalled = stalled[2:]
            accepted = None
            for _ in range(50):
                accepted = upload(client, first)
                if accepted.status_code != 429:
                    break
                time.sleep(0.1)
            assert accepted is not None and accepted.status_code == 202, accepted.text
    finally:
        for connection in stalled:
            connection.close()


def test_a_feature_that_uses_up_the_pool_cannot_starve_authentication(clean_tables, make_user, migrated_database):
    """Every connection of the web's main pool held (a test route sleeps holding one): requests
    that need only authentication (their own pool) and Redis are still answered at once."""
    process, url = start_web(factory="tests.support.slow_app:create_app")
    user = make_user()
    holders = []
    try:
        for _ in range(POOL_CONNECTIONS):
            holders.append(raw_http.open_request(url, "GET", "/test/hold-connection?seconds=8", {}))
        time.sleep(1.0)
        with httpx.Client(base_url=url, timeout=5) as client:
            started = time.monotonic()
            listed = client.get("/api/v1/tasks", headers=user.headers)
            assert listed.status_code == 200, listed.text
            refused = client.get("/api/v1/tasks", headers={"Authorization": "Bearer erp_" + "x" * 43})
            assert refused.status_code == 401, refused.text
            assert time.monotonic() - started < 2
    finally:
        for connection in holders:
            connection.close()
        process.stop()
