"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from erp.core.input_types import DatabaseId, StoredText

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StoredText, Field(min_length=1, max_length=200, examples=["Acme GmbH"])]


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    created_at: datetime


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[StoredText, Field(max_length=320, pattern=EMAIL_PATTERN, examples=["ada@example.com"])]
    full_name: Annotated[StoredText, Field(max_length=200, examples=["Ada Lovelace"])] = ""
    is_superuser: bool = False

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    full_name: str
    is_active: bool
    is_superuser: bool
    created_at: datetime


class MembershipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: DatabaseId
    role: Literal["member", "admin"] = "member"


class MembershipOut(BaseModel):
    organization_id: int
    organization_name: str
    role: str


class Me(BaseModel):
    user: UserOut
    memberships: list[MembershipOut]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StoredText, Field(min_length=1, max_length=100, examples=["ci deploys"])]
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=3650,
        description="days until it expires; omitted: API_TOKEN_DEFAULT_LIFETIME_DAYS (90 by default). More than"
        " API_TOKEN_MAX_LIFETIME_DAYS (365 by default) is a 422. Never later than the token that asks for it.",
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str = Field(description="the first characters, to tell tokens apart")
    parent_token_id: int | None = Field(
        description="the token it was made with: revoking that one revokes this one; null: made from the command line"
    )
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown this once, store it now", examples=["erp_0fT3..."])


class AccountChangeOut(BaseModel):
    """One entry of the account log: who (`actor_*`; null: the command line), what, when."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    action: str = Field(examples=["token.revoke"])
    actor_user_id: int | None
    actor_email: str | None
    subject_user_id: int | None = Field(description="the user the change is about")
    organization_id: int | None
    token_id: int | None
    changed_at: datetime
    changes: dict[str, Any] = Field(description="{field: [old, new]}, and what a change did besides")
