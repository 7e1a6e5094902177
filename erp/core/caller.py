"""Who a request acts for: made by the authentication dependencies (in the accounts layer above),
read by everything that needs to know who started or may see something (task dispatch, task
status)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    user_id: int
    email: str
    is_superuser: bool
    organization_id: int | None
    role: str | None  # "member" or "admin" in organization_id; None for a superuser outside it
