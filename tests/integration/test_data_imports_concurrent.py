"""Two imports holding the same order numbers, run at the same time by a real prefork worker
with two processes: both finish, every order is imported once, and neither fails.

One file lists the orders in ascending order, the other the same orders descending within
each block of about a chunk: inserting in file order, the two chunks writing the same orders
at the same time waited for each other and PostgreSQL broke the deadlock by failing one,
which failed its whole import with 7,000 characters of SQL and the chunk's names as its error.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from erp.core.celery_app import celery_app
from tests.integration.test_data_imports import database_figures, upload
from tests.support import sales_csv
from tests.support.processes import start_worker
from tests.support.scheduling import empty_broker, wait_for

CHUNK_ROWS = 200
ORDERS_PER_BLOCK = 100  # about one chunk of rows (orders have 1 to 3 lines)


@pytest.fixture
def two_process_worker(migrated_database, redis_clean):
    empty_broker()
    worker = start_worker("--concurrency", "2", name="import-worker", env={"DATA_IMPORT_CHUNK_ROWS": str(CHUNK_ROWS)})
    yield worker
    worker.stop()


def orders_of(rows: list[list[str]]) -> list[list[list[str]]]:
    orders: list[list[list[str]]] = []
    for row in rows:
        if orders and orders[-1][0][0] == row[0]:
            orders[-1].append(row)
        else:
            orders.append([row])
    return orders


def test_two_imports_of_the_same_orders_at_once_both_finish_and_each_order_is_imported_once(
    api_client, two_process_worker, clean_tables, make_user, sync_engine
):
    celery_app.backend.client.flushdb()
    member = make_user(role="member", organization="Acme")
    rows = list(sales_csv.good_rows(12_000, seed=3, prefix="SAME"))
    good = sales_csv.expected(rows)
    orders = orders_of(rows)
    blocks = [orders[start : start + ORDERS_PER_BLOCK] for start in range(0, len(orders), ORDERS_PER_BLOCK)]
    descending = [row for block in blocks for order in reversed(block) for row in order]
    imports = [upload(api_client, member, sales_csv.csv_bytes(body)).json() for body in (rows, descending)]

    def states() -> list[tuple[str, int, int, int, int, str | None]]:
        with sync_engine.connect() as connection:
            return [
                tuple(
                    connection.execute(
                        text(
                            "SELECT status, rows_read, rows_imported, rows_skipped, rows_failed, error"
                            " FROM data_imports WHERE id = :id"
                        ),
                        {"id": accepted["import_id"]},
                    ).one()
                )
                for accepted in imports
            ]

    wait_for(lambda: all(state[0] in ("done", "failed") for state in states()), timeout=180, interval=0.2)
    finished = states()
    for status, rows_read, _, _, rows_failed, error in finished:
        assert error is None or (len(error) <= 500 and "INSERT" not in error and "Customer" not in error), error
        assert (status, rows_read, rows_failed) == ("done", 12_000, 0), finished
    assert sum(state[2] for state in finished) == 12_000, finished  # each line imported by one of them
    assert all(state[2] + state[3] == 12_000 for state in finished), finished  # the rest skipped
    assert database_figures(sync_engine, member.organization_id) == (good.orders, good.lines, good.amount_by_currency)
