"""The members' report form starts one report per form, however often it is sent: a double click
or a browser sending the POST again carries the key the form was rendered with, and the API's
Idempotency-Key rules queue the report once (against the real Redis and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from erp.console import work
from erp.core.celery_app import celery_app
from tests.integration.test_console_members import Member, api_task_count, form_token, sign_in

REPORT = {"date_from": "2026-11-01", "date_to": "2026-11-30", "group_by": "customer", "format": "csv"}


@pytest.fixture
def member(client, clean_tables, make_user) -> Member:
    celery_app.backend.client.flushdb()  # the task owners and idempotency keys of earlier tests
    return sign_in(client, make_user(role="member", organization="Acme"))


def report_form(client, member: Member) -> dict[str, str]:
    """The fields of the report form as the work page renders it (its token and its key)."""
    page = client.get(f"/console/work/{member.user.organization_id}").text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key, page
    return {"csrf": form_token(page), "idempotency_key": key.group(1), **REPORT}


def submit(client, member: Member, form: dict[str, str]):
    return client.post(f"/console/work/{member.user.organization_id}/reports", data=form, follow_redirects=False)


def test_the_same_form_sent_twice_starts_one_report(client, member):
    form = report_form(client, member)
    first, second = submit(client, member, form), submit(client, member, form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]  # the first one's task, both times
    assert "task=" in first.headers["location"]
    assert api_task_count(client, member.user) == 1


def test_each_rendered_form_and_a_changed_form_are_new_reports(client, member):
    form = report_form(client, member)
    submit(client, member, form)
    again = report_form(client, member)
    assert again["idempotency_key"] != form["idempotency_key"]
    submit(client, member, again)  # the page reloaded and the same report asked for once more
    assert api_task_count(client, member.user) == 2
    changed = submit(client, member, {**form, "date_to": "2026-11-15"})  # back, other dates, send
    assert changed.status_code == 303 and api_task_count(client, member.user) == 3


def test_a_second_submit_while_the_first_is_queuing_waits_for_its_answer(client, member, monkeypatch):
    """A double click: the second POST arrives while the first is still queuing the report."""
    queue = work.delivery.queue_sales_report
    entered = threading.Event()

    calls = 0

    async def slow_queue(*args, **kwargs):
        nonlocal calls
        calls += 1
        entered.set()
        await asyncio.sleep(0.5)
        return await queue(*args, **kwargs)

    monkeypatch.setattr(work.delivery, "queue_sales_report", slow_queue)
    form = report_form(client, member)
    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=submit(client, member, form)))
    first.start()
    assert entered.wait(10)
    answers["second"] = submit(client, member, form)
    first.join(10)
    assert answers["first"].status_code == answers["second"].status_code == 303
    assert answers["first"].headers["location"] == answers["second"].headers["location"]
    assert api_task_count(client, member.user) == 1
    # The second found the first still queuing (the API's 409) and, rather than say so, waited
    # for its answer: the same task, queued by the first alone.
    assert calls == 1


def test_a_form_without_a_key_still_works_and_a_wrong_key_is_refused(client, member):
    form = report_form(client, member)
    del form["idempotency_key"]  # a page rendered before the field existed
    assert submit(client, member, form).status_code == 303
    wrong = submit(client, member, {**form, "idempotency_key": "not a key!"})
    assert wrong.status_code == 400 and "not one the console made" in wrong.text
    assert api_task_count(client, member.user) == 1
