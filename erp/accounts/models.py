"""Organizations, users, memberships, API tokens, and the log of every change to them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from erp.core.clock import utcnow
from erp.core.config import get_settings
from erp.core.db import Base

ROLES = ("member", "admin")
# What the account log records (AccountChangeDB.action).
ACCOUNT_ACTIONS = (
    "organization.create",
    "user.create",
    "user.update",
    "user.deactivate",
    "user.activate",
    "membership.add",
    "membership.remove",
    "token.create",
    "token.revoke",
)


def default_token_expiry() -> datetime:
    """The expiry of a token row made without one (the test kit's, a script's): the default
    lifetime. The service always sets it; this keeps a token that never expires impossible."""
    return utcnow() + timedelta(days=get_settings().API_TOKEN_DEFAULT_LIFETIME_DAYS)


class OrganizationDB(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserDB(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    full_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MembershipDB(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("user_id", "organization_id"),
        CheckConstraint(f"role IN {ROLES}", name="role_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiTokenDB(Base):
    """An API token: its SHA-256 digest, never the secret.

    A token made with another token (`POST /api/v1/me/tokens`, or a superuser's
    `POST /api/v1/admin/users/{id}/tokens`) names it as `parent_token_id`: revoking a token
    revokes its descendants, and a token with a revoked or expired ancestor is refused, so a
    stolen token cannot mint itself a successor that outlives it. Tokens made from the command
    line (a fresh credential: shell access to the deployment) have no parent.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    parent_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True, default=None
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=default_token_expiry)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AccountChangeDB(Base):
    """Who changed which account, when, and what changed ({field: [old, new]}), as
    periodic_task_changes does for schedules.

    No foreign keys: the history of a deleted user, organization or token stays readable. It
    holds ids and names, never a token's secret, digest or prefix. A null actor is the
    operator's command line (`python -m erp ...`).
    """

    __tablename__ = "account_changes"
    __table_args__ = (CheckConstraint(f"action IN {ACCOUNT_ACTIONS}", name="action_known"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_email: Mapped[str | None] = mapped_column(String(320))
    subject_user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    token_id: Mapped[int | None] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    changes: Mapped[Any] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


class LoginLinkDB(Base):
    """A one-time link into the console for one user (`python -m erp create-token` prints it):
    the SHA-256 digest of its code, never the code; used once (`used_at`), then or after
    `expires_at` refused."""

    __tablename__ = "login_links"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
