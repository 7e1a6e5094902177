"""Two requests with the same Idempotency-Key at once, against the real uvicorn: the first runs,
the second is answered 409 (with Retry-After) at once, without waiting for the first; once the
first has answered, the same request gets its response. The first is an upload whose client
stalls in the middle of its body (a real socket), so it is surely still running.
"""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from tests.support import sales_csv
from tests.support.processes import start_web
from tests.support.scheduling import empty_broker, wait_for

pytestmark = pytest.mark.e2e


def claims() -> list[dict[bytes, bytes]]:
    client = celery_app.backend.client
    return [client.hgetall(key) for key in client.scan_iter(match="erp:idempotency:*")]


def test_a_second_request_while_the_first_runs_is_a_409_then_gets_the_first_response(
    migrated_database, clean_tables, make_user, sync_engine
):
    empty_broker()
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    body = sales_csv.csv_bytes(list(sales_csv.good_rows(2_000, seed=4, prefix="CONC")))
    half = len(body) // 2
    key = str(uuid.uuid4())
    headers = {**member.headers, "Idempotency-Key": key, "Content-Type": "text/csv"}
    path = f"/api/v1/organizations/{member.organization_id}/imports/sales-orders"
    carry_on = threading.Event()
    first: dict[str, httpx.Response] = {}

    def stalling_body():
        yield body[:half]
        carry_on.wait(30)
        yield body[half:]

    web, url = start_web()
    try:

        def send_first() -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                first["response"] = client.post(path, content=stalling_body(), headers=headers)

        sender = threading.Thread(target=send_first)
        sender.start()
        wait_for(lambda: any(claim.get(b"state") == b"in_progress" for claim in claims()), timeout=20)

        with httpx.Client(base_url=url, timeout=10) as client:
            second = client.post(path, content=body, headers=headers)
            assert second.status_code == 409, second.text
            assert second.headers["Retry-After"] == "1"
            assert "still being processed" in second.json()["error"]["message"]

            carry_on.set()
            sender.join(30)
            accepted = first["response"]
            assert accepted.status_code == 202, accepted.text

            again = client.post(path, content=body, headers=headers)
            assert again.status_code == 202, again.text
            assert again.json() == accepted.json() and again.headers["Idempotent-Replayed"] == "true"
    finally:
        carry_on.set()
        web.stop()
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 1
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 1
