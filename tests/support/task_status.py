"""Waiting on a task through the API, as a client would: polling its status URL."""

from __future__ import annotations

from tests.support.scheduling import wait_for


def finished_task(api_client, headers: dict, status_url: str, timeout: float = 60) -> dict:
    """The task's status once it has succeeded or failed."""
    return wait_for(
        lambda: (
            (status := api_client.get(status_url, headers=headers).json())["state"] in ("SUCCESS", "FAILURE") and status
        ),
        timeout=timeout,
    )
