"""Waiting on a task as a client does: polling its status URL until it has finished."""

from __future__ import annotations

import time
from typing import Any, Protocol

# The states after which a task's status no longer changes (RETRY and PROGRESS do).
FINISHED_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class _Response(Protocol):
    def json(self) -> Any: ...


class _Client(Protocol):
    def get(self, url: str, *, headers: dict[str, str]) -> _Response: ...


def finished_task(
    client: _Client, headers: dict[str, str], status_url: str, *, timeout: float = 30, interval: float = 0.05
) -> dict[str, Any]:
    """The task's status (`GET status_url`) once it has succeeded, failed or been revoked.

    For tests with a worker (`erp_worker`); with `erp_eager` the first answer is already final.
    Raises AssertionError with the last status seen when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(status_url, headers=headers).json()
        if status.get("state") in FINISHED_STATES:
            return status
        if time.monotonic() >= deadline:
            raise AssertionError(f"the task at {status_url} did not finish within {timeout} s: {status}")
        time.sleep(interval)
