"""Accounts: organizations, users, memberships, API tokens (plain async service functions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from erp.accounts.models import ApiTokenDB, MembershipDB, OrganizationDB, UserDB
from erp.core import tokens
from erp.core.clock import utcnow
from erp.core.errors import ConflictError, NotFoundError

# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AuthenticationError(Exception):
    """The request carries no usable token; the message says why (never the token)."""


@dataclass(frozen=True)
class Membership:
    organization_id: int
    organization_name: str
    role: str


async def _commit_unique(session: AsyncSession, message: str) -> None:
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(message) from None


async def create_organization(name: str, *, session: AsyncSession) -> OrganizationDB:
    organization = OrganizationDB(name=name)
    session.add(organization)
    await _commit_unique(session, f"an organization named {name!r} already exists")
    return organization


async def list_organizations(*, session: AsyncSession) -> list[OrganizationDB]:
    return list(await session.scalars(select(OrganizationDB).order_by(OrganizationDB.id)))


async def get_organization(organization_id: int, *, session: AsyncSession) -> OrganizationDB:
    organization = await session.get(OrganizationDB, organization_id)
    if organization is None:
        raise NotFoundError(f"organization {organization_id} does not exist")
    return organization


async def create_user(email: str, full_name: str, is_superuser: bool, *, session: AsyncSession) -> UserDB:
    user = UserDB(email=email.lower(), full_name=full_name, is_superuser=is_superuser)
    session.add(user)
    await _commit_unique(session, f"a user with email {email.lower()!r} already exists")
    return user


async def get_user(user_id: int, *, session: AsyncSession) -> UserDB:
    user = await session.get(UserDB, user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return user


async def get_user_by_email(email: str, *, session: AsyncSession) -> UserDB:
    user = await session.scalar(select(UserDB).where(UserDB.email == email.lower()))
    if user is None:
        raise NotFoundError(f"no user with email {email.lower()!r}")
    return user


async def add_member(organization_id: int, user_id: int, role: str, *, session: AsyncSession) -> MembershipDB:
    organization = await get_organization(organization_id, session=session)
    await get_user(user_id, session=session)
    membership = MembershipDB(organization_id=organization_id, user_id=user_id, role=role)
    session.add(membership)
    await _commit_unique(session, f"user {user_id} is already a member of {organization.name!r}")
    return membership


async def memberships_of(user_id: int, *, session: AsyncSession) -> list[Membership]:
    rows = await session.execute(
        select(MembershipDB.organization_id, OrganizationDB.name, MembershipDB.role)
        .join(OrganizationDB, OrganizationDB.id == MembershipDB.organization_id)
        .where(MembershipDB.user_id == user_id)
        .order_by(MembershipDB.organization_id)
    )
    return [Membership(*row) for row in rows]


async def create_token(
    user_id: int, name: str, expires_in_days: int | None, *, session: AsyncSession
) -> tuple[ApiTokenDB, str]:
    """A new token for the user: the row, and the secret (returned once, never stored)."""
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    return await create_token_expiring_at(user_id, name, expires_at, session=session)


async def create_token_expiring_at(
    user_id: int, name: str, expires_at: datetime | None, *, session: AsyncSession
) -> tuple[ApiTokenDB, str]:
    """A new token that stops working at `expires_at` (a console session: hours, not days)."""
    await get_user(user_id, session=session)
    secret = tokens.new_token()
    row = ApiTokenDB(
        user_id=user_id,
        name=name,
        prefix=tokens.display_prefix(secret),
        token_hash=tokens.token_digest(secret),
        expires_at=expires_at,
    )
    session.add(row)
    await session.commit()
    return row, secret


async def revoke_token_secret(secret: str, *, session: AsyncSession) -> None:
    """Revoke the token with this secret, whoever holds it (signing out of the console)."""
    await session.execute(
        update(ApiTokenDB)
        .where(ApiTokenDB.token_hash == tokens.token_digest(secret), ApiTokenDB.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await session.commit()


async def list_tokens(user_id: int, *, session: AsyncSession) -> list[ApiTokenDB]:
    return list(await session.scalars(select(ApiTokenDB).where(ApiTokenDB.user_id == user_id).order_by(ApiTokenDB.id)))


async def revoke_token(user_id: int, token_id: int, *, session: AsyncSession) -> ApiTokenDB:
    row = await session.get(ApiTokenDB, token_id)
    if row is None or row.user_id != user_id:
        raise NotFoundError(f"you have no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.commit()
    return row


async def revoke_tokens_named(user_id: int, name: str, *, session: AsyncSession) -> None:
    """Revoke the user's live tokens with this name (a script replacing its own token)."""
    await session.execute(
        update(ApiTokenDB)
        .where(ApiTokenDB.user_id == user_id, ApiTokenDB.name == name, ApiTokenDB.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await session.commit()


@dataclass(frozen=True)
class Authenticated:
    user_id: int
    email: str
    is_superuser: bool
    roles: dict[int, str]  # organization id -> role, for every membership of the user


# Built once: SQLAlchemy then reuses its compiled form without re-deriving a cache key per request.
_TOKEN_OWNER_QUERY = (
    select(
        ApiTokenDB.id,
        ApiTokenDB.revoked_at,
        ApiTokenDB.expires_at,
        ApiTokenDB.last_used_at,
        UserDB.id,
        UserDB.email,
        UserDB.is_active,
        UserDB.is_superuser,
        MembershipDB.organization_id,
        MembershipDB.role,
    )
    .join(UserDB, UserDB.id == ApiTokenDB.user_id)
    .outerjoin(MembershipDB, MembershipDB.user_id == UserDB.id)
    .where(ApiTokenDB.token_hash == bindparam("token_hash"))
)


async def authenticate(secret: str, *, connection: AsyncConnection) -> Authenticated:
    """The active user a token belongs to, with their roles, or AuthenticationError saying why.

    It runs on every request: one round trip of plain columns (token, user and memberships
    together) on a connection outside any transaction, no ORM session.
    """
    if not tokens.looks_like_token(secret):
        raise AuthenticationError("malformed token: API tokens start with 'erp_'")
    rows = (await connection.execute(_TOKEN_OWNER_QUERY, {"token_hash": tokens.token_digest(secret)})).all()
    if not rows:
        raise AuthenticationError("unknown token")
    token_id, revoked_at, expires_at, last_used_at, user_id, email, is_active, is_superuser = rows[0][:8]
    now = utcnow()
    if revoked_at is not None:
        raise AuthenticationError("this token has been revoked")
    if expires_at is not None and now >= expires_at:
        raise AuthenticationError("this token has expired")
    if not is_active:
        raise AuthenticationError("this user is deactivated")
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        await connection.execute(update(ApiTokenDB).where(ApiTokenDB.id == token_id).values(last_used_at=now))
    roles = {row.organization_id: row.role for row in rows if row.organization_id is not None}
    return Authenticated(user_id, email, is_superuser, roles)


async def ensure_superuser(
    email: str, full_name: str, organization_name: str | None, *, session: AsyncSession
) -> UserDB:
    """Create the user (or promote an existing one) as superuser; optionally admin of an org."""
    user = await session.scalar(select(UserDB).where(UserDB.email == email.lower()))
    if user is None:
        user = UserDB(email=email.lower(), full_name=full_name)
        session.add(user)
    user.is_superuser = True
    user.is_active = True
    await session.flush()
    if organization_name:
        organization = await session.scalar(select(OrganizationDB).where(OrganizationDB.name == organization_name))
        if organization is None:
            organization = OrganizationDB(name=organization_name)
            session.add(organization)
            await session.flush()
        membership = await session.scalar(
            select(MembershipDB).where(MembershipDB.user_id == user.id, MembershipDB.organization_id == organization.id)
        )
        if membership is None:
            session.add(MembershipDB(user_id=user.id, organization_id=organization.id, role="admin"))
    await session.commit()
    return user
