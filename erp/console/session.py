"""Signing in to the console, and keeping its forms to the signed-in user's own pages.

The API authenticates with bearer tokens (erp.accounts); a browser cannot send one by itself.
So the login page takes an API token, checks it with the same function the API's bearer check
uses (`erp.accounts.service.authenticate`: revoked, expired and deactivated all refused), and
makes a new token of its own for the browser: a console session, named so in the user's token
list, that expires after SESSION_LIFETIME and is revoked at logout. The cookie carries that
token, so every request is authenticated exactly as an API request with it would be, and a
user deactivated or demoted loses the console at the next request. Nothing else is stored: no
session table, no secret key to configure. The cookie is HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), Secure when the request came over HTTPS
(directly or through Heroku's or Dokku's router, which says so in X-Forwarded-Proto), and
scoped to /console.

Forms are protected against cross-site requests twice: SameSite=Strict, and a per-session
token in every form (`csrf`), an HMAC of the session token, which only a page rendered for
that session knows; a POST whose Origin is another site is refused as well. The login form,
before any session exists, uses a double-submit token: a random value in a cookie of its own
and in the form, which another site can neither read nor set.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request, Response
from starlette.datastructures import ImmutableMultiDict

from erp.accounts import service as accounts
from erp.core.caller import Caller
from erp.core.clock import utcnow
from erp.core.db import auth_engine, web_session_factory

logger = logging.getLogger(__name__)

SESSION_COOKIE = "erp_console_session"
LOGIN_COOKIE = "erp_console_login"
COOKIE_PATH = "/console"
SESSION_LIFETIME = timedelta(hours=12)
# How the browser's token is listed among the user's API tokens.
SESSION_TOKEN_NAME = "console session"
# A console form is a note, a token and at most a page of schedule ids; anything larger is not ours.
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 120

Form = ImmutableMultiDict[str, str]


class SignInRequired(Exception):
    """No usable session: the browser is sent to the login page (the message says why)."""


class Refused(Exception):
    """Signed in, but not allowed (403), or a form that is not ours (CSRF): the message says why."""

    def __init__(self, message: str, status_code: int = 403) -> None:
        super().__init__(message)
        self.status_code = status_code


class BadForm(Exception):
    """A body that is not a console form (wrong type, too large, not UTF-8)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in user: who they are, as the API's services take it, and their forms' token.

    `authenticated` keeps their memberships, from which the members' pages make the caller
    acting in an organization (erp.accounts.membership), as the API's organization routes do."""

    caller: Caller
    csrf_token: str
    authenticated: accounts.Authenticated


def csrf_token_for(session_secret: str) -> str:
    """The forms' token of a session: keyed by the session's own secret, so it cannot be made
    without it, and telling nothing about it."""
    return hmac.new(session_secret.encode(), b"erp console forms", hashlib.sha256).hexdigest()


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


async def current_user(request: Request) -> ConsoleUser:
    """The user of the session cookie, authenticated as the API authenticates a bearer token
    (on the same pool of its own, erp.core.db.auth_engine: no page can starve sign-in)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise SignInRequired("sign in to use the console")
    try:
        async with auth_engine().connect() as connection:
            authenticated = await accounts.authenticate(secret, connection=connection)
    except accounts.AuthenticationError as error:
        raise SignInRequired(f"your console session ended ({error}): sign in again") from None
    caller = Caller(
        user_id=authenticated.user_id,
        email=authenticated.email,
        is_superuser=authenticated.is_superuser,
        organization_id=None,
        role=None,
    )
    return ConsoleUser(caller=caller, csrf_token=csrf_token_for(secret), authenticated=authenticated)


def require_superuser(user: ConsoleUser) -> None:
    """The API's rule for schedules and the run ledger (erp.accounts.dependencies.require_superuser)."""
    if not user.caller.is_superuser:
        raise Refused("only superusers may do this")


async def read_form(request: Request) -> Form:
    """The fields of a URL-encoded form, read in full before any database connection is taken,
    so a client that sends its body slowly holds no pooled connection."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadForm("send the console's form (application/x-www-form-urlencoded)", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"a console form is at most {MAX_FORM_BYTES} bytes", 413)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadForm("the form is not UTF-8 URL-encoded fields") from None
    return ImmutableMultiDict(pairs)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # browsers send Origin on every cross-site POST; a missing one is not a site's
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def check_form(request: Request, form: Form, user: ConsoleUser) -> None:
    """Refuse (403) a form not made by a page of this session, or posted from another site."""
    if not _same_origin(request) or not hmac.compare_digest(form.get("csrf", ""), user.csrf_token):
        logger.warning(
            "console: refused a form without this session's token or from another origin (%s %s)",
            request.method,
            request.url.path,
            extra={"action": "console.csrf_refused"},
        )
        raise Refused("this form was not made by your console session: reload the page and try again")


def new_login_token() -> str:
    """A login form's double-submit token: in the form, and in its cookie (`set_login_cookie`)."""
    return secrets.token_urlsafe(32)


def set_login_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path=f"{COOKIE_PATH}/login",
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def check_login_form(request: Request, form: Form) -> None:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not _same_origin(request) or not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
        logger.warning("console: refused a login form it did not make", extra={"action": "console.csrf_refused"})
        raise Refused("this login form has expired or was not made here: reload the page and try again")


async def sign_in(api_token: str) -> tuple[accounts.Authenticated, str]:
    """Check an API token as the API would, and make the browser's session token for its user."""
    async with auth_engine().connect() as connection:
        authenticated = await accounts.authenticate(api_token.strip(), connection=connection)
    async with web_session_factory()() as session:
        # A child of the token signed in with: revoked with it, never outliving it.
        _, secret = await accounts.create_token(
            authenticated.user_id,
            SESSION_TOKEN_NAME,
            None,
            actor=authenticated,
            session=session,
            parent_token_id=authenticated.token_id,
            expires_before=utcnow() + SESSION_LIFETIME,
        )
    logger.info("console: %s signed in", authenticated.email, extra={"action": "console.signed_in"})
    return authenticated, secret


async def login_link_owner(code: str) -> accounts.LinkedUser:
    """Whom a login link would sign in (AuthenticationError if it would not): the page asking
    to confirm, which uses nothing, so a link previewer that fetches it does not spend it."""
    async with web_session_factory()() as session:
        return await accounts.login_link_user(code, use=False, session=session)


async def sign_in_with_link(code: str) -> tuple[accounts.LinkedUser, str]:
    """Spend a one-time login link and make the browser's session token for its user, in one
    transaction: the link is used if and only if the session exists."""
    async with web_session_factory()() as session:
        user = await accounts.login_link_user(code, use=True, session=session)
        # No parent: the link was made at the deployment's command line, as a CLI token is.
        _, secret = await accounts.create_token(
            user.user_id,
            SESSION_TOKEN_NAME,
            None,
            actor=user,
            session=session,
            expires_before=utcnow() + SESSION_LIFETIME,
        )
    logger.info("console: %s signed in with a login link", user.email, extra={"action": "console.signed_in"})
    return user, secret


def set_session_cookie(response: Response, request: Request, secret: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path=COOKIE_PATH,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=f"{COOKIE_PATH}/login")


async def sign_out(request: Request, response: Response, user: ConsoleUser) -> None:
    """Revoke the session's token (the cookie alone could be kept and sent again) and drop it."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        async with web_session_factory()() as session:
            await accounts.revoke_token_secret(secret, actor=user.caller, session=session)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=is_https(request), httponly=True, samesite="strict")
    logger.info("console: %s signed out", user.caller.email, extra={"action": "console.signed_out"})


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page of this site, never another site."""
    if target and target.startswith(COOKIE_PATH) and not target.startswith("//") and "\\" not in target:
        return target
    return COOKIE_PATH
