"""Who may act in an organization: the one rule of the API's organization routes and the
console's members' pages.

A member acts in their organization with their role there; a superuser may act in any
organization that exists, with no role in it; anyone else is refused before anything is read,
stored or queued for them.
"""

from __future__ import annotations

from erp.accounts import service
from erp.core.caller import Caller
from erp.core.db import web_session_factory


class NotAMember(Exception):
    """The user is neither a member of the organization nor a superuser (403)."""


async def organization_caller(authenticated: service.Authenticated, organization_id: int) -> Caller:
    """The caller acting in `organization_id`, or NotAMember; NotFoundError when a superuser
    names an organization that does not exist (members' roles already prove theirs exists)."""
    role = authenticated.roles.get(organization_id)
    if role is None:
        if not authenticated.is_superuser:
            raise NotAMember(f"you are not a member of organization {organization_id}")
        async with web_session_factory()() as session:  # rare: no session for every request
            await service.get_organization(organization_id, session=session)
    return Caller(
        user_id=authenticated.user_id,
        email=authenticated.email,
        is_superuser=authenticated.is_superuser,
        organization_id=organization_id,
        role=role,
    )
