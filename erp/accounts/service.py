"""Accounts: organizations, users, memberships, API tokens (plain async service functions).

Every change to an account is written to the account log (`account_changes`) in the same
transaction as the change itself: who did it, what changed, when. A token made with a token
is tied to it (see ApiTokenDB): revoked with it, refused once it is revoked or expired.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

from sqlalchemy import BigInteger, DateTime, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from erp.accounts.models import AccountChangeDB, ApiTokenDB, LoginLinkDB, MembershipDB, OrganizationDB, UserDB
from erp.core import tokens
from erp.core.clock import utcnow
from erp.core.config import get_settings
from erp.core.errors import ConflictError, InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AuthenticationError(Exception):
    """The request carries no usable token; the message says why (never the token)."""


class Actor(Protocol):
    """Who makes a change, as the account log records it (a Caller, or the command line)."""

    @property
    def user_id(self) -> int | None: ...

    @property
    def email(self) -> str | None: ...


@dataclass(frozen=True)
class CommandLine:
    """The operator at `python -m erp ...`: no user of the API, recorded as a null actor."""

    user_id: int | None = None
    email: str | None = None


COMMAND_LINE = CommandLine()


def _record(
    action: str,
    actor: Actor,
    changes: dict[str, Any],
    *,
    session: AsyncSession,
    subject_user_id: int | None = None,
    organization_id: int | None = None,
    token_id: int | None = None,
) -> None:
    session.add(
        AccountChangeDB(
            action=action,
            actor_user_id=actor.user_id,
            actor_email=actor.email,
            subject_user_id=subject_user_id,
            organization_id=organization_id,
            token_id=token_id,
            changes=changes,
        )
    )
    logger.info(
        "%s by %s",
        action,
        actor.email or "the command line",
        extra={
            "action": f"accounts.{action}",
            "actor_user_id": actor.user_id,
            "subject_user_id": subject_user_id,
            "organization_id": organization_id,
            "token_id": token_id,
        },
    )


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


async def create_organization(name: str, *, actor: Actor, session: AsyncSession) -> OrganizationDB:
    organization = OrganizationDB(name=name)
    session.add(organization)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(f"an organization named {name!r} already exists") from None
    _record("organization.create", actor, {"name": [None, name]}, organization_id=organization.id, session=session)
    await session.commit()
    return organization


async def list_organizations(*, session: AsyncSession) -> list[OrganizationDB]:
    return list(await session.scalars(select(OrganizationDB).order_by(OrganizationDB.id)))


async def get_organization(organization_id: int, *, session: AsyncSession) -> OrganizationDB:
    organization = await session.get(OrganizationDB, organization_id)
    if organization is None:
        raise NotFoundError(f"organization {organization_id} does not exist")
    return organization


async def create_user(email: str, full_name: str, is_superuser: bool, *, actor: Actor, session: AsyncSession) -> UserDB:
    message = f"a user with email {email.lower()!r} already exists"
    user = UserDB(email=email.lower(), full_name=full_name, is_superuser=is_superuser)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(message) from None
    changes = {"email": [None, user.email], "full_name": [None, full_name], "is_superuser": [None, is_superuser]}
    _record("user.create", actor, changes, subject_user_id=user.id, session=session)
    await session.commit()
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


async def add_member(
    organization_id: int, user_id: int, role: str, *, actor: Actor, session: AsyncSession
) -> MembershipDB:
    organization = await get_organization(organization_id, session=session)
    await get_user(user_id, session=session)
    membership = MembershipDB(organization_id=organization_id, user_id=user_id, role=role)
    session.add(membership)
    _record(
        "membership.add",
        actor,
        {"role": [None, role]},
        subject_user_id=user_id,
        organization_id=organization_id,
        session=session,
    )
    await _commit_unique(session, f"user {user_id} is already a member of {organization.name!r}")
    return membership


async def remove_member(organization_id: int, user_id: int, *, actor: Actor, session: AsyncSession) -> None:
    """Take the user out of the organization: from its next request on, it has no role there."""
    membership = await session.scalar(
        select(MembershipDB)
        .where(MembershipDB.organization_id == organization_id, MembershipDB.user_id == user_id)
        .with_for_update()
    )
    if membership is None:
        raise NotFoundError(f"user {user_id} is not a member of organization {organization_id}")
    await session.delete(membership)
    _record(
        "membership.remove",
        actor,
        {"role": [membership.role, None]},
        subject_user_id=user_id,
        organization_id=organization_id,
        session=session,
    )
    await session.commit()


async def memberships_of(user_id: int, *, session: AsyncSession) -> list[Membership]:
    rows = await session.execute(
        select(MembershipDB.organization_id, OrganizationDB.name, MembershipDB.role)
        .join(OrganizationDB, OrganizationDB.id == MembershipDB.organization_id)
        .where(MembershipDB.user_id == user_id)
        .order_by(MembershipDB.organization_id)
    )
    return [Membership(*row) for row in rows]


def token_expiry(
    now: datetime,
    expires_in_days: int | None,
    parent_expires_at: datetime | None,
    *,
    default_days: int,
    max_days: int,
) -> datetime:
    """When a new token expires: in the days asked for (the default lifetime when none are),
    never later than the token that made it, so no token outlives its parent.

    An ask beyond the maximum lifetime is refused (422) rather than shortened: the caller
    asked for something the deployment does not allow, and should know.
    """
    if expires_in_days is not None and expires_in_days > max_days:
        raise InvalidInputError(
            f"expires_in_days: at most {max_days} days (API_TOKEN_MAX_LIFETIME_DAYS); got {expires_in_days}"
        )
    expires_at = now + timedelta(days=default_days if expires_in_days is None else expires_in_days)
    return expires_at if parent_expires_at is None else min(expires_at, parent_expires_at)


async def create_token(
    user_id: int,
    name: str,
    expires_in_days: int | None,
    *,
    actor: Actor,
    session: AsyncSession,
    parent_token_id: int | None = None,
    expires_before: datetime | None = None,
) -> tuple[ApiTokenDB, str]:
    """A new token for the user: the row, and the secret (returned once, never stored).

    `parent_token_id` is the token the request that asks for it authenticated with. The parent
    row is read `FOR SHARE`: a revocation of the parent (which updates that row) then waits for
    this transaction, and its search for descendants finds the new token; or this one waits
    for the revocation and sees it (AuthenticationError). A token made from a deeper
    descendant while an ancestor is being revoked can miss the revocation's search; it is
    refused all the same, since authentication checks every ancestor.

    `expires_before`: a shorter life than whole days (the console's session token: hours).
    """
    await get_user(user_id, session=session)
    parent_expires_at = None
    if parent_token_id is not None:
        parent = await session.scalar(
            select(ApiTokenDB).where(ApiTokenDB.id == parent_token_id).with_for_update(read=True)
        )
        if parent is None or parent.revoked_at is not None:
            raise AuthenticationError("this token has been revoked")
        parent_expires_at = parent.expires_at
    settings = get_settings()
    now = utcnow()
    expires_at = token_expiry(
        now,
        expires_in_days,
        parent_expires_at,
        default_days=settings.API_TOKEN_DEFAULT_LIFETIME_DAYS,
        max_days=settings.API_TOKEN_MAX_LIFETIME_DAYS,
    )
    if expires_before is not None:
        expires_at = min(expires_at, expires_before)
    if expires_at <= now:
        raise AuthenticationError("this token has expired")
    secret = tokens.new_token()
    row = ApiTokenDB(
        user_id=user_id,
        parent_token_id=parent_token_id,
        name=name,
        prefix=tokens.display_prefix(secret),
        token_hash=tokens.token_digest(secret),
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    changes = {
        "name": [None, name],
        "expires_at": [None, expires_at.isoformat()],
        "parent_token_id": [None, parent_token_id],
    }
    _record("token.create", actor, changes, subject_user_id=user_id, token_id=row.id, session=session)
    await session.commit()
    return row, secret


async def revoke_token_secret(secret: str, *, actor: Actor, session: AsyncSession) -> None:
    """Revoke the token with this secret, and its descendants, whoever holds it (signing out of
    the console); recorded in the account log like any revocation."""
    row = await session.scalar(select(ApiTokenDB).where(ApiTokenDB.token_hash == tokens.token_digest(secret)))
    if row is not None and row.revoked_at is None:
        await revoke_token(row.user_id, row.id, actor=actor, session=session)


async def list_tokens(user_id: int, *, session: AsyncSession) -> list[ApiTokenDB]:
    await get_user(user_id, session=session)  # 404 for a user that does not exist
    return list(await session.scalars(select(ApiTokenDB).where(ApiTokenDB.user_id == user_id).order_by(ApiTokenDB.id)))


# Every live token descending from the given ones, children of other users' tokens included.
# A statement of its own, after the given tokens were updated: under READ COMMITTED it sees a
# child committed by a mint that held its parent FOR SHARE until then (see create_token).
_REVOKE_DESCENDANTS = text(
    """
    WITH RECURSIVE descendants AS (
        SELECT id FROM api_tokens WHERE parent_token_id = ANY(:token_ids)
        UNION
        SELECT child.id FROM api_tokens child JOIN descendants ON child.parent_token_id = descendants.id
    )
    UPDATE api_tokens SET revoked_at = :now
    WHERE id IN (SELECT id FROM descendants) AND revoked_at IS NULL
    RETURNING id
    """
).bindparams(bindparam("token_ids", type_=ARRAY(BigInteger)), bindparam("now", type_=DateTime(timezone=True)))


async def _revoke_lineages(token_ids: Sequence[int], now: datetime, *, session: AsyncSession) -> list[int]:
    """Revoke the tokens and all their descendants; the ids of those that were live."""
    if not token_ids:
        return []
    revoked = await session.scalars(
        update(ApiTokenDB)
        .where(ApiTokenDB.id.in_(token_ids), ApiTokenDB.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ApiTokenDB.id)
    )
    own = list(revoked)
    descendants = await session.scalars(_REVOKE_DESCENDANTS, {"token_ids": list(token_ids), "now": now})
    return sorted(own + list(descendants))


async def revoke_token(user_id: int, token_id: int, *, actor: Actor, session: AsyncSession) -> ApiTokenDB:
    """Revoke the user's token and every token made with it (and with those, and so on)."""
    row = await session.get(ApiTokenDB, token_id)
    if row is None or row.user_id != user_id:
        raise NotFoundError(f"user {user_id} has no token {token_id}")
    now = utcnow()
    revoked = await _revoke_lineages([token_id], now, session=session)
    if revoked:
        changes = {
            "revoked_at": [None, now.isoformat()] if token_id in revoked else None,
            "revoked_descendants": [id_ for id_ in revoked if id_ != token_id],
        }
        _record(
            "token.revoke",
            actor,
            {key: value for key, value in changes.items() if value is not None},
            subject_user_id=user_id,
            token_id=token_id,
            session=session,
        )
    await session.commit()
    await session.refresh(row)
    return row


async def revoke_tokens_named(user_id: int, name: str, *, actor: Actor, session: AsyncSession) -> None:
    """Revoke the user's live tokens with this name (a script replacing its own token)."""
    ids = list(
        await session.scalars(
            select(ApiTokenDB.id).where(
                ApiTokenDB.user_id == user_id, ApiTokenDB.name == name, ApiTokenDB.revoked_at.is_(None)
            )
        )
    )
    now = utcnow()
    for token_id in ids:
        revoked = await _revoke_lineages([token_id], now, session=session)
        if revoked:
            changes = {
                "revoked_at": [None, now.isoformat()],
                "revoked_descendants": [i for i in revoked if i != token_id],
            }
            _record("token.revoke", actor, changes, subject_user_id=user_id, token_id=token_id, session=session)
    await session.commit()


async def set_user_active(user_id: int, active: bool, *, actor: Actor, session: AsyncSession) -> UserDB:
    """Deactivate (or activate again) a user.

    Deactivating revokes every live token of the user, with their descendants: requests stop
    at once (authentication also refuses an inactive user), and activating the user again
    does not bring a token back that may have leaked meanwhile; the user gets a new one.
    """
    if not active and actor.user_id == user_id:
        raise ConflictError("you cannot deactivate yourself: ask another superuser")
    # FOR NO KEY UPDATE: a token being inserted for this user (its foreign key takes FOR KEY
    # SHARE on this row) does not wait for us while we wait for its parent (no deadlock).
    user = await session.scalar(select(UserDB).where(UserDB.id == user_id).with_for_update(key_share=True))
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    if user.is_active == active:
        return user
    user.is_active = active
    changes: dict[str, Any] = {"is_active": [not active, active]}
    if not active:
        live = list(
            await session.scalars(
                select(ApiTokenDB.id).where(ApiTokenDB.user_id == user_id, ApiTokenDB.revoked_at.is_(None))
            )
        )
        changes["revoked_tokens"] = await _revoke_lineages(live, utcnow(), session=session)
    _record("user.activate" if active else "user.deactivate", actor, changes, subject_user_id=user_id, session=session)
    await session.commit()
    return user


async def list_changes(
    *, session: AsyncSession, user_id: int | None, organization_id: int | None, limit: int, offset: int
) -> list[AccountChangeDB]:
    """The account log, newest first; of one user (as subject) and/or one organization."""
    query = select(AccountChangeDB)
    if user_id is not None:
        query = query.where(AccountChangeDB.subject_user_id == user_id)
    if organization_id is not None:
        query = query.where(AccountChangeDB.organization_id == organization_id)
    rows = await session.scalars(query.order_by(AccountChangeDB.id.desc()).limit(limit).offset(offset))
    return list(rows)


@dataclass(frozen=True)
class Authenticated:
    user_id: int
    email: str
    is_superuser: bool
    roles: dict[int, str]  # organization id -> role, for every membership of the user
    token_id: int  # the token the request authenticated with: the parent of any token it makes


# Built once: SQLAlchemy then reuses its compiled form without re-deriving a cache key per request.
# `lineage_ended`: an ancestor of the token (the token that made it, and so on) is revoked or
# expired. Revocation already reaches descendants (revoke_token); this refuses a token whose
# ancestor was revoked any other way (plain SQL) in the same round trip, and costs one index
# lookup per ancestor: nothing for a token made from the command line.
_TOKEN_OWNER_QUERY = text(
    """
    SELECT token.id AS token_id, token.revoked_at, token.expires_at, token.last_used_at,
           users.id AS user_id, users.email, users.is_active, users.is_superuser,
           memberships.organization_id, memberships.role,
           token.parent_token_id IS NOT NULL AND EXISTS (
               WITH RECURSIVE ancestors AS (
                   SELECT id, parent_token_id, revoked_at, expires_at
                   FROM api_tokens WHERE id = token.parent_token_id
                   UNION
                   SELECT parent.id, parent.parent_token_id, parent.revoked_at, parent.expires_at
                   FROM api_tokens parent JOIN ancestors ON parent.id = ancestors.parent_token_id
               )
               SELECT FROM ancestors WHERE revoked_at IS NOT NULL OR expires_at <= :now
           ) AS lineage_ended
    FROM api_tokens token
    JOIN users ON users.id = token.user_id
    LEFT JOIN memberships ON memberships.user_id = users.id
    WHERE token.token_hash = :token_hash
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


async def authenticate(secret: str, *, connection: AsyncConnection) -> Authenticated:
    """The active user a token belongs to, with their roles, or AuthenticationError saying why.

    It runs on every request: one round trip of plain columns (token, its ancestors' state,
    user and memberships together) on a connection outside any transaction, no ORM session.
    """
    if not tokens.looks_like_token(secret):
        raise AuthenticationError("malformed token: API tokens start with 'erp_'")
    now = utcnow()
    rows = (await connection.execute(_TOKEN_OWNER_QUERY, {"token_hash": tokens.token_digest(secret), "now": now})).all()
    if not rows:
        raise AuthenticationError("unknown token")
    first = rows[0]
    if first.revoked_at is not None:
        raise AuthenticationError("this token has been revoked")
    if now >= first.expires_at:
        raise AuthenticationError("this token has expired")
    if first.lineage_ended:
        raise AuthenticationError("this token has been revoked: the token that made it was revoked or has expired")
    if not first.is_active:
        raise AuthenticationError("this user is deactivated")
    if first.last_used_at is None or now - first.last_used_at > LAST_USED_RESOLUTION:
        await connection.execute(update(ApiTokenDB).where(ApiTokenDB.id == first.token_id).values(last_used_at=now))
    roles = {row.organization_id: row.role for row in rows if row.organization_id is not None}
    return Authenticated(first.user_id, first.email, first.is_superuser, roles, first.token_id)


async def ensure_superuser(
    email: str, full_name: str, organization_name: str | None, *, actor: Actor, session: AsyncSession
) -> UserDB:
    """Create the user (or promote an existing one) as superuser; optionally admin of an org."""
    user = await session.scalar(select(UserDB).where(UserDB.email == email.lower()))
    if user is None:
        user = UserDB(email=email.lower(), full_name=full_name, is_superuser=True, is_active=True)
        session.add(user)
        await session.flush()
        changes = {"email": [None, user.email], "full_name": [None, full_name], "is_superuser": [None, True]}
        _record("user.create", actor, changes, subject_user_id=user.id, session=session)
    elif not (user.is_superuser and user.is_active):
        changes = {
            field: [getattr(user, field), True] for field in ("is_superuser", "is_active") if not getattr(user, field)
        }
        user.is_superuser = True
        user.is_active = True
        _record("user.update", actor, changes, subject_user_id=user.id, session=session)
    if organization_name:
        organization = await session.scalar(select(OrganizationDB).where(OrganizationDB.name == organization_name))
        if organization is None:
            organization = OrganizationDB(name=organization_name)
            session.add(organization)
            await session.flush()
            _record(
                "organization.create",
                actor,
                {"name": [None, organization_name]},
                organization_id=organization.id,
                session=session,
            )
        membership = await session.scalar(
            select(MembershipDB).where(MembershipDB.user_id == user.id, MembershipDB.organization_id == organization.id)
        )
        if membership is None:
            session.add(MembershipDB(user_id=user.id, organization_id=organization.id, role="admin"))
            _record(
                "membership.add",
                actor,
                {"role": [None, "admin"]},
                subject_user_id=user.id,
                organization_id=organization.id,
                session=session,
            )
    await session.commit()
    return user


# --- one-time login links to the console ------------------------------------------------------

# Where a login link points (the console's route), and its base when PUBLIC_BASE_URL is unset.
LOGIN_LINK_PATH = "/console/login/link"
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"
# A code is 43 characters (32 random bytes); anything much longer is not one of ours.
LOGIN_CODE_MAX_LENGTH = 100


@dataclass(frozen=True)
class LinkedUser:
    """The user a login link is for, as the account log records an actor."""

    user_id: int
    email: str


async def create_login_link(user_id: int, *, session: AsyncSession) -> str:
    """A new one-time login code for the user (stored as its digest): the code, shown once."""
    await get_user(user_id, session=session)
    code = secrets.token_urlsafe(32)
    lifetime = timedelta(minutes=get_settings().LOGIN_LINK_LIFETIME_MINUTES)
    session.add(LoginLinkDB(user_id=user_id, code_hash=tokens.token_digest(code), expires_at=utcnow() + lifetime))
    await session.commit()
    logger.info(
        "login link made for user %s",
        user_id,
        extra={"action": "accounts.login_link.create", "subject_user_id": user_id},
    )
    return code


def login_link_url(code: str, base_url: str | None = None) -> str:
    """The link to print: `<base>/console/login/link?code=...`."""
    base = (base_url or get_settings().PUBLIC_BASE_URL or DEFAULT_PUBLIC_BASE_URL).rstrip("/")
    return f"{base}{LOGIN_LINK_PATH}?{urlencode({'code': code})}"


async def login_link_user(code: str, *, use: bool, session: AsyncSession) -> LinkedUser:
    """The user of a live login code, or AuthenticationError saying why not (unknown, used,
    expired, user deactivated). With `use`, the link is marked used in the session's
    transaction (its row locked first: of two uses at once, the second finds it used), so the
    caller commits it together with what it signs in."""
    if not code or len(code) > LOGIN_CODE_MAX_LENGTH:
        raise AuthenticationError("this login link is not valid")
    query = select(LoginLinkDB).where(LoginLinkDB.code_hash == tokens.token_digest(code))
    link = await session.scalar(query.with_for_update() if use else query)
    if link is None:
        raise AuthenticationError("this login link is not valid")
    if link.used_at is not None:
        raise AuthenticationError("this login link has already been used: make a new one")
    now = utcnow()
    if now >= link.expires_at:
        raise AuthenticationError("this login link has expired: make a new one")
    user = await get_user(link.user_id, session=session)
    if not user.is_active:
        raise AuthenticationError("this user is deactivated")
    if use:
        link.used_at = now
        await session.flush()
    return LinkedUser(user.id, user.email)
