"""`/api/v1/me` (your account and tokens) and `/api/v1/admin/...` (superusers manage accounts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from erp.accounts import service
from erp.accounts.dependencies import Authenticated, CurrentUser, SuperuserCaller
from erp.accounts.models import ApiTokenDB
from erp.accounts.schemas import (
    AccountChangeOut,
    Me,
    MembershipCreate,
    MembershipOut,
    OrganizationCreate,
    OrganizationOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
)
from erp.core.db import DbSession
from erp.core.http_errors import error_responses
from erp.core.input_types import DatabaseId, Offset

router = APIRouter(prefix="/api/v1", tags=["accounts"])
ERRORS = error_responses(401, 403, 404, 422)


def _token_created(row: ApiTokenDB, secret: str) -> TokenCreated:
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=secret)


async def _mint(
    user_id: int, data: TokenCreate, authenticated: service.Authenticated, actor: service.Actor, session: DbSession
) -> TokenCreated:
    """A token made with the request's token, tied to it (see erp.accounts.models.ApiTokenDB)."""
    try:
        row, secret = await service.create_token(
            user_id,
            data.name,
            data.expires_in_days,
            actor=actor,
            session=session,
            parent_token_id=authenticated.token_id,
        )
    except service.AuthenticationError as error:  # revoked or expired since it was checked
        raise HTTPException(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from None
    return _token_created(row, secret)


@router.get("/me", response_model=Me, summary="You, and the organizations you belong to", responses=ERRORS)
async def read_me(user: CurrentUser, session: DbSession) -> Me:
    memberships = await service.memberships_of(user.id, session=session)
    return Me(user=UserOut.model_validate(user), memberships=[MembershipOut(**vars(m)) for m in memberships])


@router.post(
    "/me/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    summary="Create an API token (its secret is shown once)",
    responses=ERRORS,
)
async def create_my_token(
    data: TokenCreate, user: CurrentUser, authenticated: Authenticated, session: DbSession
) -> TokenCreated:
    return await _mint(user.id, data, authenticated, authenticated, session)


@router.get(
    "/me/tokens", response_model=list[TokenOut], summary="Your API tokens (never their secrets)", responses=ERRORS
)
async def list_my_tokens(user: CurrentUser, session: DbSession) -> list[TokenOut]:
    return [TokenOut.model_validate(row) for row in await service.list_tokens(user.id, session=session)]


@router.delete(
    "/me/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one of your tokens, and every token made with it",
    responses=ERRORS,
)
async def revoke_my_token(
    token_id: DatabaseId, user: CurrentUser, authenticated: Authenticated, session: DbSession
) -> Response:
    await service.revoke_token(user.id, token_id, actor=authenticated, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/admin/organizations",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationOut,
    summary="Create an organization",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_organization(data: OrganizationCreate, caller: SuperuserCaller, session: DbSession) -> OrganizationOut:
    return OrganizationOut.model_validate(await service.create_organization(data.name, actor=caller, session=session))


@router.get(
    "/admin/organizations", response_model=list[OrganizationOut], summary="List organizations", responses=ERRORS
)
async def list_organizations(caller: SuperuserCaller, session: DbSession) -> list[OrganizationOut]:
    return [OrganizationOut.model_validate(row) for row in await service.list_organizations(session=session)]


@router.post(
    "/admin/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create a user",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_user(data: UserCreate, caller: SuperuserCaller, session: DbSession) -> UserOut:
    return UserOut.model_validate(
        await service.create_user(data.email, data.full_name, data.is_superuser, actor=caller, session=session)
    )


@router.post(
    "/admin/organizations/{organization_id}/members",
    status_code=status.HTTP_201_CREATED,
    response_model=MembershipOut,
    summary="Add a user to an organization",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def add_member(
    organization_id: DatabaseId, data: MembershipCreate, caller: SuperuserCaller, session: DbSession
) -> MembershipOut:
    await service.add_member(organization_id, data.user_id, data.role, actor=caller, session=session)
    organization = await service.get_organization(organization_id, session=session)
    return MembershipOut(organization_id=organization_id, organization_name=organization.name, role=data.role)


@router.delete(
    "/admin/organizations/{organization_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a user from an organization",
    responses=ERRORS,
)
async def remove_member(
    organization_id: DatabaseId, user_id: DatabaseId, caller: SuperuserCaller, session: DbSession
) -> Response:
    await service.remove_member(organization_id, user_id, actor=caller, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/admin/users/{user_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    summary="Create an API token for a user (its secret is shown once), tied to your token",
    responses=ERRORS,
)
async def create_token_for_user(
    user_id: DatabaseId, data: TokenCreate, caller: SuperuserCaller, authenticated: Authenticated, session: DbSession
) -> TokenCreated:
    return await _mint(user_id, data, authenticated, caller, session)


@router.get(
    "/admin/users/{user_id}/tokens",
    response_model=list[TokenOut],
    summary="A user's API tokens (never their secrets)",
    responses=ERRORS,
)
async def list_user_tokens(user_id: DatabaseId, caller: SuperuserCaller, session: DbSession) -> list[TokenOut]:
    return [TokenOut.model_validate(row) for row in await service.list_tokens(user_id, session=session)]


@router.delete(
    "/admin/users/{user_id}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a user's token, and every token made with it",
    responses=ERRORS,
)
async def revoke_user_token(
    user_id: DatabaseId, token_id: DatabaseId, caller: SuperuserCaller, session: DbSession
) -> Response:
    await service.revoke_token(user_id, token_id, actor=caller, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/admin/users/{user_id}/deactivate",
    response_model=UserOut,
    summary="Deactivate a user: its tokens are revoked and stop working at once",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def deactivate_user(user_id: DatabaseId, caller: SuperuserCaller, session: DbSession) -> UserOut:
    return UserOut.model_validate(await service.set_user_active(user_id, False, actor=caller, session=session))


@router.post(
    "/admin/users/{user_id}/activate",
    response_model=UserOut,
    summary="Activate a user again (it needs a new token)",
    responses=ERRORS,
)
async def activate_user(user_id: DatabaseId, caller: SuperuserCaller, session: DbSession) -> UserOut:
    return UserOut.model_validate(await service.set_user_active(user_id, True, actor=caller, session=session))


@router.get(
    "/admin/account-changes",
    response_model=list[AccountChangeOut],
    summary="Who changed which account, what, when; newest first",
    responses=ERRORS,
)
async def list_account_changes(
    caller: SuperuserCaller,
    session: DbSession,
    user_id: Annotated[DatabaseId | None, Query(description="changes about this user")] = None,
    organization_id: Annotated[DatabaseId | None, Query(description="changes in this organization")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> list[AccountChangeOut]:
    rows = await service.list_changes(
        session=session, user_id=user_id, organization_id=organization_id, limit=limit, offset=offset
    )
    return [AccountChangeOut.model_validate(row) for row in rows]
