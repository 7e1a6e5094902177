"""CSV decoding, records, header and row checks, and grouping rows into orders (pure logic)."""

from __future__ import annotations

import pytest

from erp.features.data_processing.parsing import (
    COLUMNS,
    CsvRecords,
    EncodingProblem,
    HeaderProblem,
    OrderAssembler,
    Record,
    RowProblem,
    Utf8Decoder,
    column_picker,
    header_columns,
    parse_row,
)

IN_ORDER = tuple(range(len(COLUMNS)))
PICK = column_picker(IN_ORDER)


def records_of(text: str, piece: int) -> list[Record]:
    records = CsvRecords()
    found = []
    for start in range(0, len(text), piece):
        found += records.feed(text[start : start + piece])
    return found + records.finish()


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
def test_records_are_the_same_whatever_the_pieces_and_know_their_lines(piece):
    text = 'h1,h2\r\na,"two\nlines"\n\nb,"say ""hi"""\nc,last'
    assert [(r.first_line, r.last_line, r.fields) for r in records_of(text, piece)] == [
        (1, 1, ["h1", "h2"]),
        (2, 3, ["a", "two\nlines"]),
        (5, 5, ["b", 'say "hi"']),
        (6, 6, ["c", "last"]),
    ]


@pytest.mark.parametrize("piece", [1, 4, 1000])
def test_text_after_a_closing_quote_is_a_problem_of_its_record_alone_wherever_the_pieces_end(piece):
    text = 'h\nx,"b"c\ny\n'
    assert [(r.first_line, r.last_line, r.fields, r.problem) for r in records_of(text, piece)] == [
        (1, 1, ["h"], None),
        (2, 2, None, "not readable as CSV: ',' expected after '\"'"),
        (3, 3, ["y"], None),
    ]


def test_a_quoted_field_left_open_at_the_end_is_a_row_problem():
    [header, broken] = records_of('h\n"never closed\nmore\n', 4)
    assert broken.fields is None and "unexpected end of data" in broken.problem
    assert (broken.first_line, header.fields) == (2, ["h"])


def test_utf8_with_and_without_bom_and_a_character_cut_between_chunks():
    decoder = Utf8Decoder()
    data = "\ufeffcaf\u00e9\n".encode()
    assert decoder.decode(data[:5]) + decoder.decode(data[5:], final=True) == "caf\u00e9\n"
    assert Utf8Decoder().decode(b"plain", final=True) == "plain"


def test_a_byte_that_is_not_utf8_names_its_line_across_chunks():
    decoder = Utf8Decoder()
    decoder.decode(b"one\ntwo\n")
    with pytest.raises(EncodingProblem, match=r"line 4 is not valid UTF-8 \(byte 0xfc\)"):
        decoder.decode(b"three\nM\xfcller")
    cut = Utf8Decoder()
    cut.decode(b"a\n\xc3")  # the first byte of \u00e9; the second comes in the next chunk
    with pytest.raises(EncodingProblem, match=r"line 3 is not valid UTF-8 \(byte 0xff\)"):
        cut.decode(b"\xa9\n\xff")


def test_header_in_any_order_and_what_is_wrong_with_a_bad_one():
    assert header_columns([" Unit_Price", *COLUMNS[:-1]]) == (1, 2, 3, 4, 5, 6, 0)
    with pytest.raises(HeaderProblem, match=r"missing unit_price; unknown 'price'"):
        header_columns([*COLUMNS[:-1], "price"])
    with pytest.raises(HeaderProblem, match=r"repeated customer"):
        header_columns([*COLUMNS, "customer"])


def row(**changes: str) -> list[str]:
    fields = {
        "order_number": "SO-1",
        "order_date": "2026-03-04",
        "customer": "Acme",
        "currency": "EUR",
        "product": "Bolt",
        "quantity": "3",
        "unit_price": "2.50",
    }
    fields.update(changes)
    return [fields[name] for name in COLUMNS]


def test_a_valid_row():
    parsed = parse_row(row(customer="  Acme  "), PICK, 7)
    assert (
        parsed.line,
        parsed.order_date,
        parsed.customer,
        parsed.quantity,
        parsed.unit_price,
        parsed.unit_price_cents,
    ) == (7, "2026-03-04", "Acme", 3, "2.50", 250)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"order_number": " "}, "order_number is empty"),
        ({"order_date": "04.03.2026"}, "not a date written YYYY-MM-DD"),
        ({"order_date": "2026-02-29"}, "not a date in the calendar"),
        ({"currency": "eur"}, "three-letter ISO 4217 code"),
        ({"quantity": "0"}, "whole number from 1"),
        ({"quantity": "1.5"}, "whole number from 1"),
        ({"quantity": "\u0661"}, "whole number from 1"),
        ({"unit_price": "-1.00"}, "not negative"),
        ({"unit_price": "1.005"}, "at most 2 decimals"),
        ({"unit_price": "1_000"}, "amount such as 12.50"),
        ({"product": "x" * 201}, "product is longer than 200 characters"),
        # PostgreSQL cannot store U+0000; no XLSX cell (a sales report) can hold these.
        ({"customer": "Ac\x00me"}, "customer holds the control character U[+]0000 at position 3"),
        ({"product": "Widget\x07"}, "product holds the control character U[+]0007 at position 7"),
        ({"order_number": "SO\x0b1"}, "order_number holds the control character U[+]000B at position 3"),
    ],
)
def test_a_bad_row_names_the_column_and_why(changes, message):
    with pytest.raises(RowProblem, match=message):
        parse_row(row(**changes), PICK, 2)


@pytest.mark.parametrize(
    ("price", "text", "cents"),
    [("3", "3", 300), ("0.5", "0.5", 50), ("12.05", "12.05", 1205), ("\u0661\u0662.\u0665", "12.50", 1250)],
)
def test_a_price_is_kept_as_postgresql_reads_it_and_in_cents(price, text, cents):
    parsed = parse_row(row(unit_price=price), PICK, 2)
    assert (parsed.unit_price, parsed.unit_price_cents) == (text, cents)


def test_tabs_and_line_breaks_inside_a_text_field_are_text():
    assert parse_row(row(customer="Acme\tEurope\r\nBranch"), PICK, 2).customer == "Acme\tEurope\r\nBranch"


def test_a_row_with_several_problems_names_the_one_checked_first():
    # The checks run in a fixed order: order number, date, currency, quantity, price, customer, product.
    with pytest.raises(RowProblem, match="currency 'eur'"):
        parse_row(row(customer=" ", currency="eur", product=""), PICK, 2)
    with pytest.raises(RowProblem, match="not a date in the calendar"):
        parse_row(row(order_date="2026-02-30", quantity="0"), PICK, 2)
    with pytest.raises(RowProblem, match="customer is empty"):
        parse_row(row(customer=" ", product=""), PICK, 2)


def test_wrong_field_count():
    with pytest.raises(RowProblem, match="expected 7 fields, found 6"):
        parse_row(row()[:-1], PICK, 2)


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
