"""`/api/v1/me` (your account and tokens) and `/api/v1/admin/...` (superusers manage accounts)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from erp.accounts import service
from erp.accounts.dependencies import CurrentUser, SuperuserCaller
from erp.accounts.models import ApiTokenDB
from erp.accounts.schemas import (
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
from erp.core.input_types import DatabaseId

router = APIRouter(prefix="/api/v1", tags=["accounts"])
ERRORS = error_responses(401, 403, 404, 422)


def _token_created(row: ApiTokenDB, secret: str) -> TokenCreated:
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=secret)


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
async def create_my_token(data: TokenCreate, user: CurrentUser, session: DbSession) -> TokenCreated:
    row, secret = await service.create_token(user.id, data.name, data.expires_in_days, session=session)
    return _token_created(row, secret)


@router.get(
    "/me/tokens", response_model=list[TokenOut], summary="Your API tokens (never their secrets)", responses=ERRORS
)
async def list_my_tokens(user: CurrentUser, session: DbSession) -> list[TokenOut]:
    return [TokenOut.model_validate(row) for row in await service.list_tokens(user.id, session=session)]


@router.delete(
    "/me/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one of your tokens",
    responses=ERRORS,
)
async def revoke_my_token(token_id: DatabaseId, user: CurrentUser, session: DbSession) -> Response:
    await service.revoke_token(user.id, token_id, session=session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/admin/organizations",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationOut,
    summary="Create an organization",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_organization(data: OrganizationCreate, caller: SuperuserCaller, session: DbSession) -> OrganizationOut:
    return OrganizationOut.model_validate(await service.create_organization(data.name, session=session))


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
        await service.create_user(data.email, data.full_name, data.is_superuser, session=session)
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
    await service.add_member(organization_id, data.user_id, data.role, session=session)
    organization = await service.get_organization(organization_id, session=session)
    return MembershipOut(organization_id=organization_id, organization_name=organization.name, role=data.role)


@router.post(
    "/admin/users/{user_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    summary="Create an API token for a user (its secret is shown once)",
    responses=ERRORS,
)
async def create_token_for_user(
    user_id: DatabaseId, data: TokenCreate, caller: SuperuserCaller, session: DbSession
) -> TokenCreated:
    row, secret = await service.create_token(user_id, data.name, data.expires_in_days, session=session)
    return _token_created(row, secret)
