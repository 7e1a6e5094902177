"""CSV decoding, records, header and row checks (pure logic)."""

from __future__ import annotations

import time

import pytest

from erp.features.data_processing.parsing import (
    COLUMNS,
    CsvRecords,
    EncodingProblem,
    HeaderProblem,
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


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 1000])
@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_lines_may_end_with_lf_cr_lf_or_cr_alone_wherever_the_pieces_end(piece, end):
    text = f'h1,h2{end}a,"two{end}lines"{end}{end}b,c{end}d,last'
    assert [(r.first_line, r.last_line, r.fields) for r in records_of(text, piece)] == [
        (1, 1, ["h1", "h2"]),
        (2, 3, ["a", f"two{end}lines"]),
        (5, 5, ["b", "c"]),
        (6, 6, ["d", "last"]),
    ]


def test_a_large_file_with_cr_line_ends_comes_out_record_by_record_as_it_is_fed():
    records = CsvRecords()
    line = "SO-1,2026-03-04,Acme,EUR,Bolt,3,2.50\r"
    found = records.feed("h\r" + line * 5000)  # about 190 KB: CR alone ends each line
    # The last CR may be the first half of a CR LF: its line is complete with the next piece.
    assert len(found) == 5000 and found[-1] == Record(5000, 5000, line[:-1].split(","))
    assert records.feed("x") == [Record(5001, 5001, line[:-1].split(","))]


# Alone, in the serial phase: even CPU seconds grow by half when other workers share the cores'
# caches (8.7x seen in a parallel run, 5.6x alone).
@pytest.mark.serial
def test_a_record_that_never_ends_costs_time_in_proportion_to_its_length():
    """Quoted fields each holding a line break, never ending: the parser must not read the
    pending record again from its start with each piece. Compared in the same run: four times
    the text must cost well under sixteen times the time (it took 15x when it did). Timed in
    this process's CPU seconds, so other processes sharing the cores (a parallel run) do not count."""

    def seconds(repeats: int) -> float:
        text = "h\n" + '"x\n",' * repeats
        records = CsvRecords()
        started = time.process_time()
        for start in range(0, len(text), 16 * 1024):
            records.feed(text[start : start + 16 * 1024])
        records.finish()
        return time.process_time() - started

    seconds(10_000)  # warm up
    small = min(seconds(100_000) for _ in range(3))
    large = min(seconds(400_000) for _ in range(3))
    assert large / small < 8, f"500 KB took {small:.3f} s, 2 MB {large:.3f} s: {large / small:.1f}x"


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


def test_a_byte_that_is_not_utf8_names_its_line_whatever_ends_the_lines():
    decoder = Utf8Decoder()
    decoder.decode(b"one\rtwo\r\nthree\r")  # the CR LF cut by the chunk boundary is one line end
    with pytest.raises(EncodingProblem, match=r"line 5 is not valid UTF-8 \(byte 0xfc\)"):
        decoder.decode(b"\nfour\rM\xfcller")


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
