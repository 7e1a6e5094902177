"""`Idempotency-Key` on every POST that queues work or stores a file: a retried request queues its
work once and answers with the first request's response; another request under the same key is
a 422. Real PostgreSQL and Redis, no worker (what is queued is counted in the broker).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from fastapi import HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import text

from erp.core import idempotency
from erp.core.caller import Caller
from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from tests.integration.test_data_imports import upload
from tests.integration.test_periodic_tasks_api import BASE as PERIODIC
from tests.integration.test_periodic_tasks_api import new_task
from tests.support import sales_csv
from tests.support.scheduling import QUEUE, broker, empty_broker

REPORT = {"date_from": "2026-01-01", "date_to": "2026-01-31", "group_by": "month", "format": "csv"}


@pytest.fixture
def member(clean_tables, make_user):
    empty_broker()
    celery_app.backend.client.flushdb()
    return make_user(role="member", organization="Acme")


def queued() -> int:
    client = broker()
    try:
        return client.llen(QUEUE)
    finally:
        client.close()


def keyed(user, key: str) -> dict[str, str]:
    return {**user.headers, "Idempotency-Key": key}


def reports_url(user) -> str:
    return f"/api/v1/organizations/{user.organization_id}/reports/sales"


def test_a_retried_ping_answers_with_the_first_task_and_queues_it_once(api_client, member):
    key = str(uuid.uuid4())
    first = api_client.post("/api/v1/tasks/ping", headers=keyed(member, key))
    again = api_client.post("/api/v1/tasks/ping", headers=keyed(member, key))
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
    assert queued() == 1
    # Without a key every request is its own.
    assert api_client.post("/api/v1/tasks/ping", headers=member.headers).json() != first.json()
    assert queued() == 2


def test_a_retried_report_request_queues_one_report(api_client, member):
    key = "report-2026-01-retry"
    answers = [api_client.post(reports_url(member), json=REPORT, headers=keyed(member, key)) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 202, 202], answers[0].text
    assert len({answer.json()["task_id"] for answer in answers}) == 1
    assert queued() == 1
    # The key is kept in Redis for the stated window.
    [stored] = idempotency_keys()
    assert 0 < ttl(stored) <= get_settings().IDEMPOTENCY_KEY_TTL_SECONDS


def test_another_body_under_the_same_key_is_a_422_and_queues_nothing(api_client, member):
    key = str(uuid.uuid4())
    assert api_client.post(reports_url(member), json=REPORT, headers=keyed(member, key)).status_code == 202
    other = api_client.post(reports_url(member), json={**REPORT, "format": "xlsx"}, headers=keyed(member, key))
    assert other.status_code == 422, other.text
    assert "Idempotency-Key" in other.json()["error"]["message"]
    # Another endpoint under the same key is another request too.
    assert api_client.post("/api/v1/tasks/ping", headers=keyed(member, key)).status_code == 422
    assert queued() == 1


def test_keys_belong_to_their_caller(api_client, member, make_user):
    colleague = make_user(role="member", organization="Acme")
    key = str(uuid.uuid4())
    mine = api_client.post(reports_url(member), json=REPORT, headers=keyed(member, key)).json()
    theirs = api_client.post(reports_url(colleague), json=REPORT, headers=keyed(colleague, key))
    assert theirs.status_code == 202 and theirs.json()["task_id"] != mine["task_id"]
    assert queued() == 2


def test_a_request_that_failed_is_not_kept_under_its_key(api_client, member):
    key = str(uuid.uuid4())
    refused = api_client.post(reports_url(member), json={**REPORT, "group_by": "year"}, headers=keyed(member, key))
    assert refused.status_code == 422
    assert api_client.post(reports_url(member), json=REPORT, headers=keyed(member, key)).status_code == 202
    assert queued() == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [("", "at least 1 character"), ("k" * 256, "at most 255 characters"), ("two words", "should match pattern")],
)
def test_a_malformed_key_is_a_422_naming_the_header(api_client, member, key, reason):
    answer = api_client.post("/api/v1/tasks/ping", headers=keyed(member, key))
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert "idempotency-key" in message.lower() and reason in message, message
    assert queued() == 0


def test_a_retried_upload_stores_one_file_and_queues_one_import(api_client, member, sync_engine):
    body = sales_csv.csv_bytes(list(sales_csv.good_rows(500, seed=3, prefix="IDEM")))
    key = str(uuid.uuid4())

    def send(content: bytes):
        return api_client.post(
            f"/api/v1/organizations/{member.organization_id}/imports/sales-orders",
            content=content,
            headers={**keyed(member, key), "Content-Type": "text/csv"},
            params={"filename": "orders.csv"},
        )

    first, again = send(body), send(body)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json()
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 1
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 1
    assert queued() == 1
    # Another file under the same key: refused, nothing stored.
    other = send(body.replace(b"IDEM", b"OTHR"))
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]["message"], other.text
    # Another file name under the same key is another request as well: refused before it is read.
    renamed = api_client.post(
        f"/api/v1/organizations/{member.organization_id}/imports/sales-orders",
        content=body,
        headers={**keyed(member, key), "Content-Type": "text/csv"},
        params={"filename": "renamed.csv"},
    )
    assert renamed.status_code == 422, renamed.text
    assert upload(api_client, member, body).status_code == 202  # no key: an import of its own
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 2
    assert queued() == 2


def test_a_retried_run_now_sends_one_run(api_client, clean_tables, make_user, redis_clean):
    empty_broker()
    admin = make_user(role=None, superuser=True)
    task = new_task(api_client, admin, name="once please", enabled=False).json()
    key = str(uuid.uuid4())
    answers = [api_client.post(f"{PERIODIC}/{task['id']}/run", headers=keyed(admin, key)) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [202, 202], answers[0].text
    assert answers[0].json() == answers[1].json()
    assert queued() == 1
    assert api_client.get(f"{PERIODIC}/{task['id']}", headers=admin.headers).json()["total_run_count"] == 1


def idempotency_keys() -> list[str]:
    client = celery_app.backend.client
    return [key.decode() for key in client.scan_iter(match="erp:idempotency:*")]


def ttl(key: str) -> int:
    return celery_app.backend.client.ttl(key)


class Answer(BaseModel):
    value: int


def bare_request() -> Request:
    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("testserver", 80),
        "path": "/api/v1/tasks/ping",
        "query_string": b"",
        "headers": [],
    }
    return Request(scope, receive)


@pytest.fixture
async def own_redis_client(anyio_backend, redis_clean):
    # The module's client belongs to the loop that made it: this test's loop gets its own.
    idempotency._client.cache_clear()
    yield
    await idempotency.close()
    idempotency._client.cache_clear()


@pytest.mark.anyio
async def test_a_long_request_keeps_its_claim_and_a_dead_ones_claim_expires(monkeypatch, own_redis_client):
    monkeypatch.setattr(idempotency, "LEASE_SECONDS", 2)
    caller = Caller(user_id=2**40, email="lease@example.com", is_superuser=False, organization_id=1, role="member")
    key = str(uuid.uuid4())

    async def slow() -> Answer:
        await asyncio.sleep(5)  # two and a half leases
        return Answer(value=1)

    async def quick() -> Answer:
        return Answer(value=2)

    running = asyncio.create_task(idempotency.Idempotency(bare_request(), Response(), key).once(caller, Answer, slow))
    await asyncio.sleep(4)  # the first lease would have expired twice over without renewal
    with pytest.raises(HTTPException) as caught:
        await idempotency.Idempotency(bare_request(), Response(), key).once(caller, Answer, quick)
    assert caught.value.status_code == 409
    assert await running == Answer(value=1)
    replayed = Response()
    assert await idempotency.Idempotency(bare_request(), replayed, key).once(caller, Answer, quick) == Answer(value=1)
    assert replayed.headers["Idempotent-Replayed"] == "true"

    # A web process that died holding a claim: its key is free again after the lease.
    other = str(uuid.uuid4())
    stranded = idempotency.Idempotency(bare_request(), Response(), other)
    assert (await stranded._claim(caller, "fingerprint-of-a-lost-request"))[1] is not None
    await asyncio.sleep(2.5)
    assert await idempotency.Idempotency(bare_request(), Response(), other).once(caller, Answer, quick) == Answer(
        value=2
    )
