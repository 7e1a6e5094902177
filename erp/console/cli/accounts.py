"""`python -m erp create-superuser|create-token|login-link`: credentials, made at the shell.

The token is printed once on stdout and nowhere else; store it when you see it. It has no
parent token (the shell is the credential) and expires like any other (API_TOKEN_*_LIFETIME_DAYS).
Each change is in the account log with a null actor: the command line.

A one-time login link to the console is printed with it, on stderr (stdout stays the token
alone, for scripts): it signs its user in once, within LOGIN_LINK_LIFETIME_MINUTES.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts import service
from erp.console.cli import common
from erp.console.cli.common import JsonOption
from erp.core.config import get_settings

EmailOption = Annotated[str, typer.Option(help="the user's email", show_default=False)]
TokenNameOption = Annotated[str, typer.Option(help="how the token is listed among the user's tokens")]
ExpiresOption = Annotated[
    int | None,
    typer.Option(
        help="default: API_TOKEN_DEFAULT_LIFETIME_DAYS; at most API_TOKEN_MAX_LIFETIME_DAYS", show_default=False
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        help="where the console is reached (default: PUBLIC_BASE_URL, else http://127.0.0.1:8000)",
        show_default=False,
    ),
]
LinkOption = Annotated[bool, typer.Option("--login-link/--no-login-link", help="also print a one-time login link")]


def _print_credentials(secret: str | None, link: str | None, as_json: bool) -> None:
    if as_json:
        body = {"login_link": link} if secret is None else {"token": secret, "login_link": link}
        common.print_json(body)
        return
    if secret is not None:
        typer.echo(secret)
    if link is not None:
        minutes = get_settings().LOGIN_LINK_LIFETIME_MINUTES
        # stderr: a script reading the token from stdout gets the token alone.
        typer.echo(f"console login link (works once, for {minutes} minutes): {link}", err=True)


async def _token_and_link(
    user_id: int,
    token_name: str | None,
    expires_in_days: int | None,
    link: bool,
    base_url: str | None,
    *,
    session: AsyncSession,
) -> tuple[str | None, str | None]:
    secret = None
    if token_name is not None:
        _, secret = await service.create_token(
            user_id, token_name, expires_in_days, actor=service.COMMAND_LINE, session=session
        )
    code = await service.create_login_link(user_id, session=session) if link else None
    return secret, None if code is None else service.login_link_url(code, base_url)


def create_superuser(
    email: EmailOption,
    name: Annotated[str, typer.Option(help="the user's full name")] = "",
    organization: Annotated[
        str | None,
        typer.Option(help="also make the user admin of this organization (created if missing)", show_default=False),
    ] = None,
    token_name: TokenNameOption = "cli",
    expires_in_days: ExpiresOption = None,
    login_link: LinkOption = True,
    base_url: BaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or promote a superuser and print a new token (and a one-time console login link)."""

    async def action(session: AsyncSession) -> tuple[str | None, str | None]:
        user = await service.ensure_superuser(email, name, organization, actor=service.COMMAND_LINE, session=session)
        return await _token_and_link(user.id, token_name, expires_in_days, login_link, base_url, session=session)

    _print_credentials(*common.run(action), as_json)


def create_token(
    email: EmailOption,
    token_name: TokenNameOption = "cli",
    expires_in_days: ExpiresOption = None,
    login_link: LinkOption = True,
    base_url: BaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a new token for an existing user (and a one-time console login link)."""

    async def action(session: AsyncSession) -> tuple[str | None, str | None]:
        user = await service.get_user_by_email(email, session=session)
        return await _token_and_link(user.id, token_name, expires_in_days, login_link, base_url, session=session)

    _print_credentials(*common.run(action), as_json)


def login_link(email: EmailOption, base_url: BaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Print a one-time console login link for an existing user, and no token."""

    async def action(session: AsyncSession) -> tuple[str | None, str | None]:
        user = await service.get_user_by_email(email, session=session)
        return await _token_and_link(user.id, None, None, True, base_url, session=session)

    _, link = common.run(action)
    if as_json:
        _print_credentials(None, link, as_json)
    else:
        typer.echo(link)
