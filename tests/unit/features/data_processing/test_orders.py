"""Grouping rows into orders, in batches that cover whole lines (pure logic)."""

from __future__ import annotations

from erp.features.data_processing.orders import OrderAssembler
from erp.features.data_processing.parsing import Record
from tests.unit.features.data_processing.test_parsing import IN_ORDER, row


def assemble(rows: list[list[str] | None]) -> list:
    assembler = OrderAssembler(IN_ORDER)
    batches = []
    for line, fields in enumerate(rows, start=2):
        record = Record(line, line, fields, None if fields is not None else "not readable as CSV: boom")
        if batch := assembler.add(record):
            batches.append(batch)
    batches.append(assembler.finish())
    return batches


def test_consecutive_rows_make_one_order_and_batches_cover_whole_lines():
    batches = assemble(
        [row(), row(product="Nut", quantity="1", unit_price="0.10"), row(order_number="SO-2"), row(order_number="SO-3")]
    )
    assert [[order.order_number for order in batch.orders] for batch in batches] == [["SO-1"], ["SO-2"], ["SO-3"]]
    first = batches[0].orders[0]
    assert first.amount == "7.60" and [line.position for line in first.lines] == [1, 2]
    assert [batch.through_line for batch in batches] == [3, 4, 5]
    assert [batch.rows for batch in batches] == [2, 1, 1]


def test_an_order_whose_total_does_not_fit_its_column_is_refused_whole():
    big = {"quantity": "1000000", "unit_price": "999999.99"}
    [batch] = assemble([row(**big), row(**big)])
    assert batch.orders == []
    assert batch.failures[0].reason == "the order's total 1999999980000.00 exceeds 999999999999.99"


def test_one_bad_row_rejects_its_whole_order_and_names_it():
    batches = assemble([row(), row(quantity="x"), row(order_number="SO-2")])
    assert batches[0].orders == []
    assert [(failure.line, failure.reason) for failure in batches[0].failures] == [
        (2, "order 'SO-1' not imported: its row at line 3 is invalid"),
        (3, "quantity 'x' is not a whole number from 1 to 1,000,000"),
    ]
    assert [order.order_number for order in batches[1].orders] == ["SO-2"]


def test_rows_of_one_order_must_agree_on_date_customer_and_currency():
    [batch] = assemble([row(), row(currency="USD")])
    assert batch.orders == []
    assert batch.failures[1].reason == "currency differs from line 2 of the same order 'SO-1'"


def test_an_unreadable_row_inside_an_order_is_reported_after_it_without_breaking_it():
    batches = assemble([row(), None, row(product="Nut"), row(order_number="SO-2")])
    assert [order.order_number for order in batches[0].orders] == ["SO-1"]
    assert batches[0].orders[0].row_lines == [2, 4]
    assert [(failure.line, failure.reason) for failure in batches[0].failures] == [(3, "not readable as CSV: boom")]
    assert batches[0].through_line == 4 and batches[0].rows == 3


def test_an_unreadable_row_between_orders_is_a_batch_of_its_own():
    batches = assemble([None, row()])
    assert batches[0].failures[0].line == 2 and batches[0].through_line == 2 and batches[0].rows == 1
