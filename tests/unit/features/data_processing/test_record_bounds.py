"""Bounds of a CSV record and of a line (pure logic): an oversized record is a row problem at
once and reading goes on at the next line; the upload check names an overlong line."""

from __future__ import annotations

import pytest

from erp.features.data_processing import parsing
from erp.features.data_processing.parsing import (
    MAX_RECORD_CHARACTERS,
    MAX_RECORD_FIELDS,
    MAX_RECORD_LINES,
    CsvRecords,
    LineLengths,
    LineTooLong,
)


def records_of(text: str, piece: int) -> list[tuple[int, int, list[str] | None, str | None]]:
    records = CsvRecords()
    found = []
    for start in range(0, len(text), piece):
        found += records.feed(text[start : start + piece])
    return [(r.first_line, r.last_line, r.fields, r.problem) for r in found + records.finish()]


@pytest.mark.parametrize("piece", [7, 16 * 1024])
def test_a_record_over_the_line_bound_is_a_problem_at_its_first_line_and_the_next_line_is_read(piece):
    text = 'h\n"' + "x\n" * (MAX_RECORD_LINES + 5) + "a,b\n"
    found = records_of(text, piece)
    assert found[1] == (2, MAX_RECORD_LINES + 2, None, f"the record spans more than {MAX_RECORD_LINES:,} lines")
    assert found[-1] == (MAX_RECORD_LINES + 7, MAX_RECORD_LINES + 7, ["a", "b"], None)


@pytest.mark.parametrize("piece", [1000, 16 * 1024, 10**6])
def test_a_line_over_the_character_bound_is_a_problem_of_its_own_and_its_rest_is_dropped(piece):
    for end in ("\n", "\r\n", "\r"):
        text = f"h{end}" + "y" * (MAX_RECORD_CHARACTERS + 3 * piece) + f"{end}a,b{end}"
        assert records_of(text, piece) == [
            (1, 1, ["h"], None),
            (2, 2, None, f"the record is longer than {MAX_RECORD_CHARACTERS:,} characters"),
            (3, 3, ["a", "b"], None),
        ], (piece, end)


def test_a_record_over_the_field_bound_is_a_problem():
    [_, wide, narrow] = records_of("h\n" + "," * MAX_RECORD_FIELDS + "\na,b\n", 100)
    assert wide == (2, 2, None, f"the record has more than {MAX_RECORD_FIELDS} fields")
    assert narrow == (3, 3, ["a", "b"], None)


def test_an_overlong_line_is_named_wherever_the_pieces_end():
    lengths = LineLengths(limit=10)
    lengths.feed("short\r\n0123456789\rabc")
    lengths.feed("\n")  # a LF after a CR that ended the piece before
    lengths.feed("0123456")
    with pytest.raises(LineTooLong, match=r"^line 4 is longer than 10 characters$"):
        lengths.feed("7890\nok\n")
    other = LineLengths(limit=10)
    other.feed("a\rb\r")
    with pytest.raises(LineTooLong, match=r"^line 4 is longer than 10 characters$"):
        other.feed("\nc\r" + "z" * 11)


TEXT_WITH_AND_WITHOUT_QUOTES = (
    "h1,h2\r\n"
    "a,b\n\n"
    "c,d\r"
    "e," + ",".join("f" * 3 for _ in range(MAX_RECORD_FIELDS)) + "\n"
    '"quoted\nover lines",x\n'
    "  ,spaces \r\n" + "ünï,cödé\n" * 50 + "last,line"
)


@pytest.mark.parametrize("piece", [1, 5, 64, 16 * 1024])
def test_lines_without_quotes_read_without_the_greenlet_give_the_records_it_gives(piece, monkeypatch):
    """Complete lines with no quote are read by a csv reader over the lines (`_plain_records`);
    every line number, field and problem is the one the reader in its greenlet gives."""
    fast = records_of(TEXT_WITH_AND_WITHOUT_QUOTES, piece)
    monkeypatch.setattr(parsing, "_plain_records", lambda lines, lines_before: None)
    assert fast == records_of(TEXT_WITH_AND_WITHOUT_QUOTES, piece)
    assert fast[:4] == [
        (1, 1, ["h1", "h2"], None),
        (2, 2, ["a", "b"], None),
        (4, 4, ["c", "d"], None),
        (5, 5, None, f"the record has more than {MAX_RECORD_FIELDS} fields"),
    ]
    assert fast[4:6] == [(6, 7, ["quoted\nover lines", "x"], None), (8, 8, ["  ", "spaces "], None)]
    assert fast[-1] == (59, 59, ["last", "line"], None)
