"""Who is calling: the authentication dependencies every router uses.

    caller: Caller = Depends(get_caller)          # any active user, in an organization
    caller: Caller = Depends(require_superuser)   # operators (schedules, accounts), in no organization
    caller: Caller = Depends(require_org_admin)   # admins of the caller's organization
    caller: Caller = Depends(get_organization_member)  # members of /organizations/{organization_id}/...

Callers authenticate with `Authorization: Bearer <API token>`. The organization a request
acts in is the `X-Organization-Id` header, or the caller's only organization; the admin routes
(`require_superuser`) act in none, so they neither need nor read the header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path

from erp.accounts import membership, service
from erp.accounts.models import UserDB
from erp.core import tokens
from erp.core.caller import Caller
from erp.core.db import DbSession, auth_engine, web_session_factory
from erp.core.http_errors import raises
from erp.core.input_types import DatabaseId


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


@raises(401)
async def authenticate(
    authorization: Annotated[str | None, Header(description="Bearer <API token>")] = None,
) -> service.Authenticated:
    try:
        secret = tokens.bearer_token(authorization)
    except tokens.CredentialsProblem as problem:
        raise _unauthorized(str(problem)) from None
    try:
        # Its own pool (erp.core.db.auth_engine): no feature can starve authentication.
        async with auth_engine().connect() as connection:
            return await service.authenticate(secret, connection=connection)
    except service.AuthenticationError as error:
        raise _unauthorized(str(error)) from None


Authenticated = Annotated[service.Authenticated, Depends(authenticate)]


@raises(404)  # the user was deleted after the token was read
async def get_current_active_user(authenticated: Authenticated, session: DbSession) -> UserDB:
    return await service.get_user(authenticated.user_id, session=session)


CurrentUser = Annotated[UserDB, Depends(get_current_active_user)]


# 400: several organizations and no header; 403: not a member; 404: (superusers) no such organization.
@raises(400, 403, 404)
async def get_caller(
    authenticated: Authenticated,
    x_organization_id: Annotated[DatabaseId | None, Header(description="the organization to act in")] = None,
) -> Caller:
    roles = authenticated.roles
    if x_organization_id is None:
        if len(roles) > 1:
            raise HTTPException(400, "you belong to several organizations: send X-Organization-Id to choose one")
        organization_id = next(iter(roles), None)
    elif x_organization_id in roles:
        organization_id = x_organization_id
    elif authenticated.is_superuser:
        async with web_session_factory()() as session:  # rare: no session for every request
            await service.get_organization(x_organization_id, session=session)  # 404 if missing
        organization_id = x_organization_id
    else:
        raise HTTPException(403, f"you are not a member of organization {x_organization_id}")
    return Caller(
        user_id=authenticated.user_id,
        email=authenticated.email,
        is_superuser=authenticated.is_superuser,
        organization_id=organization_id,
        role=None if organization_id is None else roles.get(organization_id),
    )


CurrentCaller = Annotated[Caller, Depends(get_caller)]


@raises(403)
async def require_superuser(authenticated: Authenticated) -> Caller:
    """A superuser, acting in no organization.

    Built on the token alone, not on `get_caller`: what an admin route does (schedules,
    accounts, the ledger) belongs to no organization, so asking which one (400 for a superuser
    with several memberships) or checking a header's organization (404) would refuse requests
    for nothing.
    """
    if not authenticated.is_superuser:
        raise HTTPException(403, "only superusers may do this")
    return Caller(
        user_id=authenticated.user_id,
        email=authenticated.email,
        is_superuser=True,
        organization_id=None,
        role=None,
    )


SuperuserCaller = Annotated[Caller, Depends(require_superuser)]


@raises(403)
async def require_org_admin(caller: CurrentCaller) -> Caller:
    if not (caller.is_superuser or caller.role == "admin"):
        raise HTTPException(403, "only admins of this organization may do this")
    return caller


@raises(403, 404)
async def get_organization_member(
    organization_id: Annotated[DatabaseId, Path(description="the organization the resource belongs to")],
    authenticated: Authenticated,
) -> Caller:
    """The caller, acting in the organization named by the path: its members and superusers.

    Anyone else gets 403 before the endpoint runs: nothing is read, stored or queued for them
    (the rule is erp.accounts.membership's, which the console's members' pages apply too).
    """
    try:
        return await membership.organization_caller(authenticated, organization_id)
    except membership.NotAMember as error:
        raise HTTPException(403, str(error)) from None


OrganizationMember = Annotated[Caller, Depends(get_organization_member)]
