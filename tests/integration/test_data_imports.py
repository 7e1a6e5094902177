"""Sales-order CSV imports through the API and a real worker: counts, errors, idempotency,
progress, rejected uploads, connection failures, and who may do what."""

from __future__ import annotations

import csv
import io
import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import text

from erp.core import task_owners
from erp.core.celery_app import celery_app
from erp.core.config import get_settings
from tests.support import sales_csv
from tests.support.task_status import finished_task

BAD_ROWS = [
    ["BAD-1", "2026-02-30", "Customer 01", "EUR", "Product 1", "1", "9.99"],
    ["BAD-2", "2026-03-01", "Customer 02", "euro", "Product 2", "1", "9.99"],
    ["BAD-3", "2026-03-02", "Customer 03", "EUR", "Product 3", "1"],
]


@pytest.fixture
def users(clean_tables, make_user):
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    outsider = make_user(role="member", organization="Globex")
    return member, outsider


def upload_url(organization_id: int) -> str:
    return f"/api/v1/organizations/{organization_id}/imports/sales-orders"


def upload(api_client, user, body: bytes, **params):
    return api_client.post(
        upload_url(user.organization_id),
        content=body,
        headers={**user.headers, "Content-Type": "text/csv"},
        params={"filename": "orders.csv", **params},
    )


def finished_import(api_client, user, accepted: dict, timeout: float = 60) -> dict:
    status = finished_task(api_client, user.headers, accepted["status_url"], timeout)
    assert status["state"] == "SUCCESS", status
    return api_client.get(accepted["import_url"], headers=user.headers, params={"errors": 100}).json()


def database_figures(sync_engine, organization_id: int) -> tuple[int, int, dict[str, object]]:
    with sync_engine.connect() as connection:
        orders = connection.execute(
            text("SELECT count(*) FROM sales_orders WHERE organization_id = :o"), {"o": organization_id}
        ).scalar_one()
        lines = connection.execute(
            text(
                "SELECT count(*) FROM sales_order_lines l JOIN sales_orders o ON o.id = l.order_id WHERE o.organization_id = :o"
            ),
            {"o": organization_id},
        ).scalar_one()
        amounts = dict(
            connection.execute(
                text("SELECT currency, sum(amount) FROM sales_orders WHERE organization_id = :o GROUP BY currency"),
                {"o": organization_id},
            ).all()
        )
    return orders, lines, amounts


def ten_thousand_rows_with_three_bad() -> tuple[bytes, list[int], sales_csv.Expected]:
    rows = list(sales_csv.good_rows(9_997))
    good = sales_csv.expected(rows)
    bad_lines = sales_csv.insert_between_orders(rows, [list(row) for row in BAD_ROWS], [1_000, 5_000, 9_000])
    assert len(rows) == 10_000
    return sales_csv.csv_bytes(rows, bom=True), bad_lines, good


def test_ten_thousand_rows_with_three_bad_import_9997_then_a_second_import_adds_nothing(
    api_client, in_process_worker, users, sync_engine
):
    member, _ = users
    body, bad_lines, good = ten_thousand_rows_with_three_bad()

    accepted = upload(api_client, member, body)
    assert accepted.status_code == 202, accepted.text
    first = finished_import(api_client, member, accepted.json())
    assert first["status"] == "done"
    assert (first["rows_read"], first["rows_imported"], first["rows_failed"], first["rows_skipped"]) == (
        10_000,
        9_997,
        3,
        0,
    )
    assert first["orders_imported"] == good.orders
    assert [error["line_number"] for error in first["errors"]] == bad_lines
    reasons = [error["reason"] for error in first["errors"]]
    assert "order_date '2026-02-30' is not a date in the calendar" in reasons[0]
    assert "currency 'euro'" in reasons[1]
    assert "expected 7 fields, found 6" in reasons[2]
    assert database_figures(sync_engine, member.organization_id) == (
        good.orders,
        good.lines,
        good.amount_by_currency,
    )

    # The whole error list, as CSV.
    download = api_client.get(first["errors_url"], headers=member.headers)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["line_number", "reason"]
    assert [int(row[0]) for row in rows[1:]] == bad_lines

    second = finished_import(api_client, member, upload(api_client, member, body).json())
    assert (second["rows_imported"], second["rows_skipped"], second["rows_failed"]) == (0, 9_997, 3)
    assert database_figures(sync_engine, member.organization_id) == (
        good.orders,
        good.lines,
        good.amount_by_currency,
    )


def test_progress_is_seen_at_least_twice_during_a_long_import(api_client, in_process_worker, users, monkeypatch):
    member, _ = users
    # Small chunks: many commits, each reporting progress (the worker runs in this process).
    monkeypatch.setattr(get_settings(), "DATA_IMPORT_CHUNK_ROWS", 200)
    body = sales_csv.csv_bytes(sales_csv.good_rows(40_000, seed=11, prefix="LONG"))
    accepted = upload(api_client, member, body).json()
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = api_client.get(accepted["status_url"], headers=member.headers).json()
        if status["state"] == "PROGRESS" and status["progress"] not in seen:
            seen.append(status["progress"])
        if status["state"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.02)
    assert status["state"] == "SUCCESS", status
    assert len(seen) >= 2, seen
    rows_read = [progress["rows_read"] for progress in seen]
    assert rows_read == sorted(rows_read) and rows_read[0] < 40_000
    assert seen[0]["stage"] == "importing" and 0 < seen[0]["percent"] <= 100


def test_control_characters_fail_their_row_and_the_rest_is_imported(api_client, in_process_worker, users, sync_engine):
    """U+0000 (which PostgreSQL cannot store) and other control characters (which no XLSX cell
    holds) in a text field fail that row, naming it; before, U+0000 failed the whole import."""
    member, _ = users
    rows = list(sales_csv.good_rows(500, seed=9, prefix="CTRL"))
    good = sales_csv.expected(rows)
    bad = [
        ["CTRL-NUL", "2026-03-01", "Acme\x00 GmbH", "EUR", "Product 1", "1", "9.99"],
        ["CTRL-BEL", "2026-03-01", "Acme", "EUR", "Widget\x07", "1", "9.99"],
    ]
    lines = sales_csv.insert_between_orders(rows, bad, [100, 300])
    result = finished_import(api_client, member, upload(api_client, member, sales_csv.csv_bytes(rows)).json())
    assert (result["status"], result["rows_imported"], result["rows_failed"]) == ("done", 500, 2)
    assert [(error["line_number"], error["reason"]) for error in result["errors"]] == [
        (lines[0], "customer holds the control character U+0000 at position 5"),
        (lines[1], "product holds the control character U+0007 at position 7"),
    ]
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)

    report = api_client.post(
        f"/api/v1/organizations/{member.organization_id}/reports/sales",
        json={"date_from": "2026-01-01", "date_to": "2026-12-31", "group_by": "customer", "format": "xlsx"},
        headers=member.headers,
    )
    assert report.status_code == 202, report.text
    status = finished_task(api_client, member.headers, report.json()["status_url"])
    assert status["state"] == "SUCCESS", status


def test_texts_holding_copys_special_characters_are_stored_as_written(
    api_client, in_process_worker, users, sync_engine
):
    """The chunks go in with COPY's text format, where a backslash, tab, line feed or carriage
    return is special (`\\N` is NULL, `\\.` ends the data): each is stored as the file wrote it."""
    member, _ = users
    texts = {
        "COPY-1": ("Back\\slash \\N", "Tab\there"),
        "COPY-2": ("Line\nfeed", "Carriage\r\nreturn"),
        "COPY-3": ('Quote " and, comma', "\\."),
        "COPY-4": ("Ünïcödé ☃", "a\n\\.\nb"),
    }
    rows = list(sales_csv.good_rows(300, seed=5))
    for number, (customer, product) in texts.items():
        rows.append([number, "2026-05-01", customer, "EUR", product, "2", "1.50"])
        rows.append([number, "2026-05-01", customer, "EUR", product + " 2", "1", "0.25"])
    result = finished_import(api_client, member, upload(api_client, member, sales_csv.csv_bytes(rows)).json())
    assert (result["status"], result["rows_imported"], result["rows_failed"]) == ("done", 308, 0), result
    with sync_engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT o.order_number, o.customer, l.position, l.product, o.amount FROM sales_orders o"
                " JOIN sales_order_lines l ON l.order_id = o.id"
                " WHERE o.organization_id = :o AND o.order_number LIKE 'COPY-%' ORDER BY 1, 3"
            ),
            {"o": member.organization_id},
        ).all()
    assert [tuple(row) for row in stored] == [
        (number, customer, position, product + suffix, Decimal("3.25"))
        for number, (customer, product) in texts.items()
        for position, suffix in ((1, ""), (2, " 2"))
    ]


def test_rows_of_an_order_apart_from_its_others_fail_in_one_chunk_and_across_chunks(
    api_client, in_process_worker, users, sync_engine, monkeypatch
):
    """An order is imported whole from its first group of rows; a later row of the same order
    fails, naming why, whether it lands in the same chunk or in a later one."""
    member, _ = users
    monkeypatch.setattr(get_settings(), "DATA_IMPORT_CHUNK_ROWS", 200)
    rows = list(sales_csv.good_rows(1_000, seed=5, prefix="SPLIT"))
    good = sales_csv.expected(rows)
    near, far = list(rows[10]), list(rows[400])
    # rows[10]'s order again a few rows on (same chunk); rows[400]'s order again ~400 rows on.
    lines = sales_csv.insert_between_orders(rows, [near, far], [20, 800])
    accepted = upload(api_client, member, sales_csv.csv_bytes(rows))
    assert accepted.status_code == 202, accepted.text
    result = finished_import(api_client, member, accepted.json())
    assert (result["rows_read"], result["rows_imported"], result["rows_failed"], result["rows_skipped"]) == (
        1_002,
        1_000,
        2,
        0,
    )
    assert result["orders_imported"] == good.orders
    assert [error["line_number"] for error in result["errors"]] == lines
    same_chunk, later_chunk = (error["reason"] for error in result["errors"])
    assert f"order {near[0]!r} appeared already at line" in same_chunk
    assert f"order {far[0]!r} appeared already earlier in this file" in later_chunk
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 422, "the file is empty"),
        (b"order_number,order_date,customer\nA,2026-01-01,C\n", 422, "missing currency, product, quantity, unit_price"),
        (
            b"order_number,order_date,customer,currency,product,quantity,unit_price,notes\n",
            422,
            "unknown 'notes'",
        ),
        (
            "order_number,order_date,customer,currency,product,quantity,unit_price\n"
            "A,2026-01-01,Caf\u00e9,EUR,P,1,1.00\n".encode("latin-1"),
            422,
            "line 2 is not valid UTF-8 (byte 0xe9)",
        ),
    ],
)
def test_a_wrong_upload_is_a_clear_4xx_and_leaves_nothing(api_client, users, sync_engine, body, status, message):
    member, _ = users
    response = upload(api_client, member, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 0


@pytest.mark.parametrize("line_end", [b"\r", b"\r\n"])
def test_a_file_over_64_kib_whose_lines_end_with_cr_or_cr_lf_is_imported_line_by_line(
    api_client, in_process_worker, users, sync_engine, line_end
):
    member, _ = users
    rows = list(sales_csv.good_rows(3_000, seed=12, prefix="CR"))
    good = sales_csv.expected(rows)
    bad_lines = sales_csv.insert_between_orders(rows, [list(BAD_ROWS[1])], [1_500])
    body = sales_csv.csv_bytes(rows).replace(b"\r\n", b"\n").replace(b"\n", line_end)
    assert len(body) > 64 * 1024 and b"\n" not in body.replace(b"\r\n", b"")
    accepted = upload(api_client, member, body)
    assert accepted.status_code == 202, accepted.text
    result = finished_import(api_client, member, accepted.json())
    assert (result["status"], result["rows_read"], result["rows_imported"], result["rows_failed"]) == (
        "done",
        3_001,
        3_000,
        1,
    )
    assert [error["line_number"] for error in result["errors"]] == bad_lines
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)


def test_an_overlong_line_is_refused_at_upload_naming_its_line(api_client, users, sync_engine):
    member, _ = users
    body = sales_csv.csv_bytes(sales_csv.good_rows(100)) + b'"' + b"x" * 70_000 + b'"\n'
    response = upload(api_client, member, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == "line 102 is longer than 65,536 characters"
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 0


def test_bad_encoding_late_in_a_large_upload_is_refused_naming_its_line(api_client, users, sync_engine):
    member, _ = users
    body = sales_csv.csv_bytes(sales_csv.good_rows(20_000)) + "Z-1,2026-01-01,M\u00fcller,EUR,P,1,1.00\n".encode(
        "latin-1"
    )
    response = upload(api_client, member, body)
    assert response.status_code == 422
    assert "line 20002 is not valid UTF-8" in response.json()["error"]["message"]
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM file_chunks")).scalar_one() == 0


def test_an_upload_over_the_limit_is_413_while_streaming_and_leaves_nothing(
    api_client, users, sync_engine, monkeypatch
):
    member, _ = users
    monkeypatch.setattr(get_settings(), "DATA_IMPORT_MAX_UPLOAD_BYTES", 50_000)
    body = sales_csv.csv_bytes(sales_csv.good_rows(5_000))

    def chunks():  # no Content-Length: the limit must hold while reading
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = api_client.post(
        upload_url(member.organization_id), content=chunks(), headers={**member.headers, "Content-Type": "text/csv"}
    )
    assert response.status_code == 413 and "50,000 bytes" in response.json()["error"]["message"]
    declared = upload(api_client, member, body)  # Content-Length says so: refused before reading
    assert declared.status_code == 413
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM files")).scalar_one() == 0


def test_a_multipart_form_is_415_saying_how_to_send_the_file(api_client, users):
    member, _ = users
    response = api_client.post(
        upload_url(member.organization_id), headers=member.headers, files={"file": ("a.csv", b"x")}
    )
    assert response.status_code == 415 and "--data-binary" in response.json()["error"]["message"]


def test_a_member_of_another_organization_gets_403_and_nothing_is_stored_or_queued(api_client, users, sync_engine):
    member, outsider = users
    body = sales_csv.csv_bytes(sales_csv.good_rows(10))
    response = api_client.post(
        upload_url(member.organization_id), content=body, headers={**outsider.headers, "Content-Type": "text/csv"}
    )
    assert response.status_code == 403 and f"not a member of organization {member.organization_id}" in response.text
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM data_imports")).scalar_one() == 0
    assert api_client.portal.call(task_owners.recent_task_ids, outsider.user_id, 10) == []

    accepted = upload(api_client, member, body).json()
    import_url = accepted["import_url"]
    assert api_client.get(import_url, headers=outsider.headers).status_code == 403
    assert api_client.get(f"{import_url}/errors.csv", headers=outsider.headers).status_code == 403
    # The outsider's own organization does not have it either.
    other = import_url.replace(
        f"/organizations/{member.organization_id}/", f"/organizations/{outsider.organization_id}/"
    )
    assert api_client.get(other, headers=outsider.headers).status_code == 404


def test_nothing_imported_twice_when_two_runs_of_one_import_overlap(users, sync_engine):
    """A redelivery while the first run still works (after a visibility timeout): the runs take
    turns on the import's row, and the one that finds its position taken stops."""
    from erp.core.bridge import run_service
    from erp.features.data_processing import import_pipeline, upload

    member, _ = users
    rows = list(sales_csv.good_rows(6_000, seed=3, prefix="TWICE"))
    good = sales_csv.expected(rows)
    body = sales_csv.csv_bytes(rows)

    async def pieces():
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    # Stored without dispatching a task: the test runs the two imports itself.
    data_import = run_service(
        upload.create_sales_order_import, member.organization_id, member.user_id, "x.csv", pieces()
    )
    outcomes = []
    runs = [
        threading.Thread(
            target=lambda: outcomes.append(run_service(import_pipeline.import_sales_orders, data_import.id))
        )
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    assert len(outcomes) == 2
    with sync_engine.connect() as connection:
        final = connection.execute(
            text("SELECT status, rows_read, rows_imported, rows_skipped FROM data_imports WHERE id = :id"),
            {"id": data_import.id},
        ).one()
    assert tuple(final) == ("done", 6_000, 6_000, 0)
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)
