"""When a new token expires (erp.accounts.service.token_expiry): pure arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erp.accounts.service import token_expiry
from erp.core.errors import InvalidInputError

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def expiry(expires_in_days: int | None, parent_expires_at: datetime | None = None) -> datetime:
    return token_expiry(NOW, expires_in_days, parent_expires_at, default_days=90, max_days=365)


def test_no_days_asked_is_the_default_lifetime():
    assert expiry(None) == NOW + timedelta(days=90)


def test_the_days_asked_up_to_the_maximum():
    assert expiry(1) == NOW + timedelta(days=1)
    assert expiry(365) == NOW + timedelta(days=365)


def test_more_than_the_maximum_is_refused_naming_the_field_and_the_setting():
    with pytest.raises(InvalidInputError) as caught:
        expiry(366)
    assert str(caught.value).startswith("expires_in_days: at most 365 days (API_TOKEN_MAX_LIFETIME_DAYS)")


@pytest.mark.parametrize("asked", [None, 30, 365])
def test_never_later_than_the_parent(asked):
    parent_expires_at = NOW + timedelta(days=2)
    assert expiry(asked, parent_expires_at) == parent_expires_at


def test_earlier_than_the_parent_when_asked():
    assert expiry(1, NOW + timedelta(days=2)) == NOW + timedelta(days=1)
