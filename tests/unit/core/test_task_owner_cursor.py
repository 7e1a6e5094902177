"""The cursor of a page of a user's tasks: what `next_before` says, and what is refused."""

from __future__ import annotations

import pytest

from erp.core.errors import InvalidInputError
from erp.core.task_owners import InvalidCursor, RecentCursor


def test_a_cursor_reads_back_exactly_what_it_wrote():
    cursor = RecentCursor(1764812345.123456, "0b6f8a3e-2c1e-4a8e-9d0c-3f0f6f6a8b11")
    assert RecentCursor.parse(cursor.text()) == cursor
    awkward = RecentCursor(0.1 + 0.2, "a:b")  # a float with no short decimal, an id with a colon
    assert RecentCursor.parse(awkward.text()) == awkward


@pytest.mark.parametrize("text", ["", "yesterday", "12.5", "12.5:", "nan:x", "inf:x", "-inf:x", f"1:{'x' * 65}"])
def test_anything_but_a_pages_cursor_is_refused_as_invalid_input(text):
    with pytest.raises(InvalidCursor, match="is not a page's next_before") as refused:
        RecentCursor.parse(text)
    assert isinstance(refused.value, InvalidInputError)  # the API answers 422
