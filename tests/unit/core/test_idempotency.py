"""The pure rules of Idempotency-Key (erp.core.idempotency): what makes two requests the same, and
what a request does with what its key holds."""

from __future__ import annotations

import pytest

from erp.core.idempotency import fingerprint, judge

BASE = ("POST", "/api/v1/organizations/1/reports/sales", "", 1, "body-sha")


def test_the_fingerprint_covers_every_part_of_the_request():
    first = fingerprint(*BASE)
    assert fingerprint(*BASE) == first
    changed = [
        ("PUT", *BASE[1:]),
        (BASE[0], "/api/v1/tasks/ping", *BASE[2:]),
        (*BASE[:2], "filename=a.csv", *BASE[3:]),
        (*BASE[:3], 2, BASE[4]),
        (*BASE[:3], None, BASE[4]),
        (*BASE[:4], "other-body"),
    ]
    assert len({fingerprint(*parts) for parts in changed} | {first}) == len(changed) + 1


def test_parts_cannot_run_into_each_other():
    assert fingerprint("POST", "/a", "b", None, "") != fingerprint("POST", "/a\nb", "", None, "")
    assert fingerprint("post", "/a", "", None, "") == fingerprint("POST", "/a", "", None, "")


@pytest.mark.parametrize(
    ("found", "content", "verdict"),
    [
        ({}, None, "claimed"),
        ({"state": "in_progress", "fingerprint": "f"}, None, "in_progress"),
        ({"state": "in_progress", "fingerprint": "g"}, None, "other_request"),
        ({"state": "done", "fingerprint": "f", "response": "{}", "content_digest": ""}, None, "replay"),
        ({"state": "done", "fingerprint": "g", "response": "{}", "content_digest": ""}, None, "other_request"),
        # A streamed body: replayed only for the same content.
        ({"state": "done", "fingerprint": "f", "response": "{}", "content_digest": "c"}, "c", "replay"),
        ({"state": "done", "fingerprint": "f", "response": "{}", "content_digest": "c"}, "d", "other_request"),
    ],
)
def test_what_a_request_does_with_what_its_key_holds(found, content, verdict):
    assert judge(found, "f", content) == verdict
