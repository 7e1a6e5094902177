"""The console's sign-in helpers that need no services: forms' tokens and where to go after."""

from __future__ import annotations

import pytest

from erp.console.session import csrf_token_for, safe_next


def test_the_forms_token_belongs_to_its_session_and_reveals_nothing_of_it():
    secret = "erp_" + "a" * 43
    token = csrf_token_for(secret)
    assert token == csrf_token_for(secret)
    assert token != csrf_token_for("erp_" + "b" * 43)
    assert secret not in token and len(token) == 64


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/schedules?q=a", "/console/schedules?q=a"),
        (None, "/console"),
        ("https://evil.example/console", "/console"),
        ("//evil.example/console", "/console"),
        ("/console\\@evil.example", "/console"),
        ("/api/v1/me", "/console"),
    ],
)
def test_after_signing_in_only_console_pages_of_this_site(target, expected):
    assert safe_next(target) == expected
