"""The runs pages' key (`next_before`): written without a `+` (a query string keeps it as it is),
read back to the same slot and id, and anything a page did not make refused, naming it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from erp.tasks.api.runs import InvalidRunCursor, RunCursor


def test_a_key_reads_back_to_its_slot_and_id_and_holds_no_plus():
    slot = datetime(2030, 1, 1, 2, 30, 0, 123456, tzinfo=UTC)
    text = RunCursor(slot, 812).text()
    assert text == "2030-01-01T02:30:00.123456Z,812" and "+" not in text
    assert RunCursor.parse(text) == RunCursor(slot, 812)


def test_a_slot_in_another_offset_is_written_in_utc():
    berlin = timezone(timedelta(hours=1))
    assert RunCursor(datetime(2030, 1, 1, 3, 30, tzinfo=berlin), 5).text() == "2030-01-01T02:30:00Z,5"


def test_the_consoles_own_cursor_with_an_offset_is_read_too():
    assert RunCursor.parse("2030-01-01T02:30:00+00:00,7") == RunCursor(datetime(2030, 1, 1, 2, 30, tzinfo=UTC), 7)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "page-2",
        "2030-01-01T02:30:00,7",  # no offset: which zone?
        "2030-01-01T02:30:00Z,",
        "2030-01-01T02:30:00Z,-1",
        "2030-01-01T02:30:00Z,²",  # a digit to str.isdigit, not to int()
        "2030-01-01T02:30:00Z,1234567890123456789",
        "0001-01-01T00:00:00+01:00,1",  # outside the years a slot is stored in
    ],
)
def test_anything_a_page_did_not_make_is_refused(text):
    with pytest.raises(InvalidRunCursor, match="is not a page's next_before"):
        RunCursor.parse(text)
