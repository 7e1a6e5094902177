"""The members' pages of the console over ASGI, against the real PostgreSQL, Redis and a real
worker: members of two organizations each see exactly what the API shows them; a report is
requested (a 422 at its field), followed and downloaded; a CSV is uploaded and its failed rows
shown and downloaded; forms without the session's token are refused and change nothing."""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import text

from erp.console import work
from erp.core import task_owners
from erp.core.celery_app import celery_app
from tests.support.orders import insert_orders
from tests.support.scheduling import wait_for

SAMPLE = Path(__file__).parents[2] / "samples" / "sales_orders.csv"
SESSION_COOKIE = "erp_console_session"


@dataclass
class Member:
    """A user signed in to the console: their API user, session cookie and forms' token."""

    user: object
    cookie: str
    csrf: str


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@pytest.fixture
def client(api_client):
    api_client.cookies.clear()
    yield api_client
    api_client.cookies.clear()


def sign_in(client, user) -> Member:
    client.cookies.clear()
    page = client.get("/console/login")
    response = client.post(
        "/console/login", data={"csrf": form_token(page.text), "token": user.token}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie
    landing = client.get("/console/work")
    return Member(user, cookie, form_token(landing.text))


def act_as(client, member: Member) -> None:
    """The browser of `member`: only their session cookie in the jar."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, member.cookie, path="/console")


@pytest.fixture
def orgs(clean_tables, make_user, sync_engine):
    """Two members of Acme, one of Globex, and orders of both organizations in November 2026."""
    celery_app.backend.client.flushdb()
    acme = make_user(role="member", organization="Acme")
    colleague = make_user(role="admin", organization="Acme")
    globex = make_user(role="member", organization="Globex")
    insert_orders(sync_engine, acme.organization_id, 40, first_day=date(2026, 11, 1), days=30, customers=3)
    insert_orders(sync_engine, globex.organization_id, 7, first_day=date(2026, 11, 1), days=30, customers=3)
    return acme, colleague, globex


def task_ids(html: str) -> list[str]:
    return re.findall(r'data-task="([^"]+)"', html)


def import_ids(html: str) -> list[int]:
    return [int(value) for value in re.findall(r'data-import="([0-9]+)"', html)]


def upload(client, member: Member, body: bytes, *, csrf: str | None = None, name: str = "orders.csv"):
    data = {} if csrf == "" else {"csrf": csrf or member.csrf}
    return client.post(
        f"/console/work/{member.user.organization_id}/imports",
        data=data,
        files={"file": (name, body, "text/csv")},
        follow_redirects=False,
    )


def test_members_land_on_their_organizations_work_and_superusers_keep_the_overview(client, orgs, make_user):
    acme, _, _ = orgs
    sign_in(client, acme)
    landing = client.get("/console", follow_redirects=False)
    assert landing.status_code == 303 and landing.headers["location"] == "/console/work"
    chooser = client.get("/console/work", follow_redirects=False)
    assert chooser.headers["location"] == f"/console/work/{acme.organization_id}"
    page = client.get(chooser.headers["location"])
    assert page.status_code == 200 and "Work of Acme" in page.text
    assert 'href="/console/schedules"' not in page.text  # the operator's pages are not offered
    assert client.get("/console/schedules").status_code == 403
    admin = make_user(superuser=True, role=None)
    sign_in(client, admin)
    assert client.get("/console").status_code == 200
    assert "Organization id" in client.get("/console/work").text  # no membership: opens any by id
    assert "Work of Acme" in client.get(f"/console/work/{acme.organization_id}").text
    assert client.get("/console/work/999999").status_code == 404


def test_each_member_sees_what_the_api_shows_them(client, in_process_worker, orgs):
    acme, _, globex = orgs
    members = {user.user_id: sign_in(client, user) for user in orgs}
    for user in orgs:
        act_as(client, members[user.user_id])
        assert upload(client, members[user.user_id], SAMPLE.read_bytes()).status_code == 303
        response = client.post(
            f"/console/work/{user.organization_id}/reports",
            data={"csrf": members[user.user_id].csrf, "date_from": "2026-11-01", "date_to": "2026-11-30"},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text

    for user in orgs:
        act_as(client, members[user.user_id])
        page = client.get(f"/console/work/{user.organization_id}").text
        api_tasks = client.get("/api/v1/tasks", headers=user.headers).json()["items"]
        assert task_ids(page) == [task["task_id"] for task in api_tasks]
        assert len(api_tasks) == 2  # their own report and import, not a colleague's
        api_imports = client.get(f"/api/v1/organizations/{user.organization_id}/imports", headers=user.headers).json()
        assert import_ids(page) == [item["id"] for item in api_imports["items"]]
    acme_imports = client.get(f"/api/v1/organizations/{acme.organization_id}/imports", headers=acme.headers).json()
    assert len(acme_imports["items"]) == 2  # the organization's: both Acme members'

    # Globex's member is refused Acme's pages, its import and its errors, as by the API.
    act_as(client, members[globex.user_id])
    acme_import = acme_imports["items"][0]["id"]
    for path in (
        f"/console/work/{acme.organization_id}",
        f"/console/work/{acme.organization_id}/imports/{acme_import}",
        f"/console/work/{acme.organization_id}/imports/{acme_import}/errors.csv",
    ):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "you are not a member of organization" in response.text
        assert client.get(
            path.replace("/console/work", "/api/v1/organizations", 1), headers=globex.headers
        ).status_code in (
            403,
            404,
        )
    assert client.get(f"/console/work/{globex.organization_id}/imports/{acme_import}").status_code == 404
    assert (
        client.get(
            f"/api/v1/organizations/{globex.organization_id}/imports/{acme_import}", headers=globex.headers
        ).status_code
        == 404
    )
    # The module's worker runs what this test queued: let it finish here, or it writes its files
    # and rows into the next test's empty tables.
    for user in orgs:
        wait_for(
            lambda user=user: all(
                task["state"] in ("SUCCESS", "FAILURE", "REVOKED")
                for task in client.get("/api/v1/tasks", headers=user.headers).json()["items"]
            ),
            timeout=60,
            message="the imports and reports this test queued",
        )


def test_a_report_is_requested_followed_and_downloaded(client, in_process_worker, orgs):
    acme, colleague, globex = orgs
    member = sign_in(client, acme)
    url = f"/console/work/{acme.organization_id}"
    refused = client.post(
        f"{url}/reports", data={"csrf": member.csrf, "date_from": "2026-11-30", "date_to": "2026-11-01"}
    )
    assert refused.status_code == 422
    assert re.search(r'name="date_to"[^>]*aria-invalid="true" aria-describedby="report-date_to-error"', refused.text)
    assert re.search(r'id="report-date_to-error">date_from 2026-11-30 is after date_to 2026-11-01<', refused.text)
    api_refusal = client.post(
        f"/api/v1/organizations/{acme.organization_id}/reports/sales",
        json={"date_from": "2026-11-30", "date_to": "2026-11-01"},
        headers=acme.headers,
    ).json()
    assert "date_from 2026-11-30 is after date_to 2026-11-01" in api_refusal["error"]["message"]
    assert client.post(f"{url}/reports", data={"csrf": member.csrf, "date_to": "2026-11-01"}).status_code == 422
    assert api_task_count(client, acme) == 0  # nothing queued for a refused form

    response = client.post(
        f"{url}/reports",
        data={"csrf": member.csrf, "date_from": "2026-11-01", "date_to": "2026-11-30", "group_by": "customer"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "Report requested." in client.get(response.headers["location"]).text

    def finished_region() -> str | None:
        region = client.get(f"{url}?region=tasks", headers={"X-Console-Live": "1"})
        return region.text if "Download" in region.text else None

    region = wait_for(finished_region, timeout=30, message="the report's download link")
    assert "<html" not in region and '<progress max="100" value="100.0"' in region  # a fragment, full
    download = re.search(r'href="(/console/work/[0-9]+/reports/files/[0-9]+)"', region).group(1)
    file = client.get(download)
    assert file.status_code == 200 and file.headers["content-type"].startswith("text/csv")
    assert file.headers["content-disposition"].startswith("attachment; filename=")
    assert file.headers["cache-control"] == "no-store" and file.headers["x-content-type-options"] == "nosniff"
    rows = list(csv.reader(io.StringIO(file.content.decode("utf-8-sig"))))
    api_path = download.replace("/console/work", "/api/v1/organizations", 1)
    assert file.content == client.get(api_path, headers=acme.headers).content
    assert {row[0] for row in rows[1:4]} == {"Customer 0", "Customer 1", "Customer 2"}

    # The same file for a colleague of Acme; a member of Globex gets 403, and 404 through their own.
    act_as(client, sign_in(client, colleague))
    assert client.get(download).content == file.content
    act_as(client, sign_in(client, globex))
    assert client.get(download).status_code == 403
    own_path = download.replace(f"/console/work/{acme.organization_id}/", f"/console/work/{globex.organization_id}/")
    assert client.get(own_path).status_code == 404


def api_task_count(client, user) -> int:
    return len(client.get("/api/v1/tasks", headers=user.headers).json()["items"])


def test_the_sample_csv_shows_its_four_failed_rows_and_their_errors_csv(client, in_process_worker, orgs, sync_engine):
    acme, _, _ = orgs
    member = sign_in(client, acme)
    response = upload(client, member, SAMPLE.read_bytes(), name="sales_orders.csv")
    assert response.status_code == 303, response.text
    page_url = response.headers["location"]
    assert re.fullmatch(rf"/console/work/{acme.organization_id}/imports/[0-9]+", page_url)
    import_id = int(page_url.rsplit("/", 1)[1])

    def done() -> str | None:
        region = client.get(f"{page_url}?region=status", headers={"X-Console-Live": "1"}).text
        return region if ">done<" in region else None

    region = wait_for(done, timeout=30, message="the import's end")
    api = client.get(
        f"/api/v1/organizations/{acme.organization_id}/imports/{import_id}",
        headers=acme.headers,
        params={"errors": 100},
    ).json()
    assert api["rows_failed"] == 4
    shown = re.findall(r"<tr><td>([0-9]+)</td><td>([^<]*)</td></tr>", region)
    assert [int(line) for line, _ in shown] == [error["line_number"] for error in api["errors"]]
    assert len(shown) == 4
    page = client.get(page_url).text
    assert "sales_orders.csv" in page and "Download errors.csv" in page
    errors_csv = client.get(f"{page_url}/errors.csv")
    assert errors_csv.status_code == 200 and errors_csv.headers["content-type"].startswith("text/csv")
    api_csv = client.get(
        f"/api/v1/organizations/{acme.organization_id}/imports/{import_id}/errors.csv", headers=acme.headers
    )
    assert errors_csv.content == api_csv.content
    assert len(list(csv.reader(io.StringIO(errors_csv.text)))) == 5  # the header and 4 rows


def test_a_wrong_upload_is_said_at_the_form_and_leaves_nothing(client, orgs, sync_engine):
    acme, _, _ = orgs
    member = sign_in(client, acme)
    wrong = upload(client, member, b"order,date\n1,2\n")
    assert wrong.status_code == 422
    assert 'id="upload-error"' in wrong.text and "Not uploaded:" in wrong.text and "header" in wrong.text
    empty_name = upload(client, member, SAMPLE.read_bytes(), name="")
    assert empty_name.status_code in (400, 422)
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 0


def test_forms_without_the_session_token_are_refused_and_change_nothing(client, orgs, sync_engine):
    acme, _, _ = orgs
    member = sign_in(client, acme)
    url = f"/console/work/{acme.organization_id}"
    report = {"date_from": "2026-11-01", "date_to": "2026-11-30"}
    assert client.post(f"{url}/reports", data=report).status_code == 403
    assert client.post(f"{url}/reports", data={**report, "csrf": "0" * 64}).status_code == 403
    elsewhere = client.post(
        f"{url}/reports", data={**report, "csrf": member.csrf}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    assert upload(client, member, SAMPLE.read_bytes(), csrf="").status_code == 403
    assert upload(client, member, SAMPLE.read_bytes(), csrf="f" * 64).status_code == 403
    assert (
        client.post(f"{url}/imports", content=SAMPLE.read_bytes(), headers={"Content-Type": "text/csv"}).status_code
        == 415
    )
    assert api_task_count(client, acme) == 0
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 0
    client.cookies.clear()
    signed_out = client.post(f"{url}/reports", data={**report, "csrf": member.csrf}, follow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/console/login?next=")


def test_tasks_and_imports_are_paged_by_key_as_the_api_pages_them(client, orgs, sync_engine, monkeypatch):
    acme, _, _ = orgs
    # Five dispatched tasks of the member, three of them at the very same moment (a tie in Redis).
    now = time.time()
    moments = [now - 30, now - 20, now - 20, now - 20, now - 10]
    for number, moment in enumerate(moments):
        owner = task_owners.TaskOwner(
            f"00000000-0000-0000-0000-00000000000{number}", "erp.ping", acme.user_id, acme.organization_id, moment
        )
        client.portal.call(task_owners.record_owner, owner)
    with sync_engine.begin() as connection:
        for number in range(5):
            connection.execute(
                text(
                    "INSERT INTO data_imports (organization_id, kind, filename, size_bytes, status, attempts,"
                    " resume_after_line, rows_read, rows_imported, rows_skipped, rows_failed, orders_imported)"
                    " VALUES (:o, 'sales_orders', :f, 1, 'done', 1, 0, 0, 0, 0, 0, 0)"
                ),
                {"o": acme.organization_id, "f": f"file-{number}.csv"},
            )
    monkeypatch.setattr(work, "TASKS_PER_PAGE", 2)
    monkeypatch.setattr(work, "IMPORTS_PER_PAGE", 2)
    sign_in(client, acme)

    def walk(path: str, ids, older: str) -> list:
        seen = []
        while path:
            html = client.get(path).text
            seen += ids(html)
            following = re.search(rf'rel="next" href="([^"]+)">{older}<', html)
            path = following.group(1).replace("&amp;", "&") if following else ""
            assert "offset" not in path
        return seen

    url = f"/console/work/{acme.organization_id}"
    console_tasks = walk(url, task_ids, "Older tasks")
    api_tasks, before = [], None
    while True:
        params = {"limit": 2, **({"before": before} if before else {})}
        answer = client.get("/api/v1/tasks", headers=acme.headers, params=params).json()
        api_tasks += [item["task_id"] for item in answer["items"]]
        before = answer["next_before"]
        if before is None:
            break
    assert console_tasks == api_tasks
    assert len(set(console_tasks)) == 5  # none skipped or shown twice across the tie
    assert console_tasks[0].endswith("4") and console_tasks[-1].endswith("0")
    console_imports = walk(url, import_ids, "Older imports")
    assert console_imports == sorted(console_imports, reverse=True) and len(set(console_imports)) == 5
    page = client.get(
        f"/api/v1/organizations/{acme.organization_id}/imports", headers=acme.headers, params={"limit": 2}
    ).json()
    assert [item["id"] for item in page["items"]] == console_imports[:2] and page["next_before"] == console_imports[1]
    assert client.get("/api/v1/tasks", headers=acme.headers, params={"before": "yesterday"}).status_code == 422
    assert client.get(f"{url}?tasks_before=yesterday").status_code == 422


def test_a_member_of_two_organizations_chooses_and_the_regions_answer_304_unchanged(client, orgs, sync_engine):
    acme, _, globex = orgs
    with sync_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO memberships (user_id, organization_id, role) VALUES (:u, :o, 'member')"),
            {"u": acme.user_id, "o": globex.organization_id},
        )
    sign_in(client, acme)
    chooser = client.get("/console/work", follow_redirects=False)
    assert chooser.status_code == 200  # two organizations: no guess
    assert f'href="/console/work/{acme.organization_id}">Acme<' in chooser.text
    assert f'href="/console/work/{globex.organization_id}">Globex<' in chooser.text
    assert "Work of Globex" in client.get(f"/console/work/{globex.organization_id}").text

    for region in ("tasks", "imports"):
        url = f"/console/work/{acme.organization_id}?region={region}"
        first = client.get(url, headers={"X-Console-Live": "1"})
        assert first.status_code == 200 and "<html" not in first.text
        page = client.get(f"/console/work/{acme.organization_id}").text
        assert f'data-etag="{escape(first.headers["etag"])}"' in page  # the page's copy has the same tag
        unchanged = client.get(url, headers={"X-Console-Live": "1", "If-None-Match": first.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""
    client.cookies.clear()
    assert (
        client.get(f"/console/work/{acme.organization_id}?region=tasks", headers={"X-Console-Live": "1"}).status_code
        == 401
    )
