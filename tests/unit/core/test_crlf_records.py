"""PostgreSQL's LF-ended CSV records become CRLF-ended ones, whatever the pieces they come in."""

from __future__ import annotations

import pytest

from erp.core.spreadsheet_cells import CrlfRecords

# Records as COPY (FORMAT csv) writes them: the second and fourth hold line feeds in quotes.
COPY_OUTPUT = b'a,EUR,1,2.00\n"two\nlines, ""quoted""",USD,2,3.00\nplain,"x",3,4.00\n"\n\r\n",CHF,4,5.00\n'
EXPECTED = b'a,EUR,1,2.00\r\n"two\nlines, ""quoted""",USD,2,3.00\r\nplain,"x",3,4.00\r\n"\n\r\n",CHF,4,5.00\r\n'


def test_only_record_ends_become_crlf():
    records = CrlfRecords()
    assert records.convert(COPY_OUTPUT) == EXPECTED
    assert records.records == 4


@pytest.mark.parametrize("cut", range(1, len(COPY_OUTPUT)))
def test_pieces_cut_anywhere_give_the_same_bytes_and_count(cut):
    records = CrlfRecords()
    assert records.convert(COPY_OUTPUT[:cut]) + records.convert(COPY_OUTPUT[cut:]) == EXPECTED
    assert records.records == 4


def test_output_without_quotes_is_counted_by_its_line_feeds():
    records = CrlfRecords()
    assert records.convert(b"a,1\nb,2\n") == b"a,1\r\nb,2\r\n"
    assert records.records == 2
