"""API tokens: opaque, shown once, stored only as a SHA-256 digest.

A token carries 256 random bits, so a fast digest is enough: there is nothing to brute-force,
and a lookup by digest hits the unique index directly.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PREFIX = "erp_"
# What a token looks like; the log filter masks anything of this shape.
TOKEN_PATTERN = re.compile(r"erp_[A-Za-z0-9_-]{20,}")
# Characters kept in listings so people can tell their tokens apart.
DISPLAY_PREFIX_LENGTH = 12


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_PREFIX_LENGTH]


def looks_like_token(value: str) -> bool:
    return TOKEN_PATTERN.fullmatch(value) is not None


class CredentialsProblem(ValueError):
    """The request carries no bearer token; the message says what to send (never the header)."""


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or CredentialsProblem.

    One reading of the header for the authentication dependency and for the web's edge, which
    answers an anonymous API request before its body is read (erp.core.request_bodies).
    """
    if authorization is None:
        raise CredentialsProblem("missing Authorization header: send 'Authorization: Bearer <API token>'")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise CredentialsProblem("malformed Authorization header: expected 'Bearer <API token>'")
    return secret.strip()
