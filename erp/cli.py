"""Operator commands: `python -m erp create-superuser ...`, `python -m erp create-token ...`.

The token is printed once on stdout and nowhere else; store it when you see it. It has no
parent token (the shell is the credential) and expires like any other (API_TOKEN_*_LIFETIME_DAYS).
Each change is in the account log with a null actor: the command line.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts import service
from erp.core.db import run_with_session
from erp.core.errors import InvalidInputError, NotFoundError


async def _create_superuser(args: argparse.Namespace, session: AsyncSession) -> str:
    user = await service.ensure_superuser(
        args.email, args.name, args.organization, actor=service.COMMAND_LINE, session=session
    )
    _, secret = await service.create_token(
        user.id, args.token_name, args.expires_in_days, actor=service.COMMAND_LINE, session=session
    )
    return secret


async def _create_token(args: argparse.Namespace, session: AsyncSession) -> str:
    user = await service.get_user_by_email(args.email, session=session)
    _, secret = await service.create_token(
        user.id, args.token_name, args.expires_in_days, actor=service.COMMAND_LINE, session=session
    )
    return secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m erp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    superuser = commands.add_parser("create-superuser", help="create or promote a superuser and print a new token")
    superuser.add_argument("--email", required=True)
    superuser.add_argument("--name", default="")
    superuser.add_argument("--organization", help="also make the user admin of this organization (created if missing)")
    token = commands.add_parser("create-token", help="print a new token for an existing user")
    token.add_argument("--email", required=True)
    for command in (superuser, token):
        command.add_argument("--token-name", default="cli")
        command.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help="default: API_TOKEN_DEFAULT_LIFETIME_DAYS; at most API_TOKEN_MAX_LIFETIME_DAYS",
        )
    args = parser.parse_args(argv)
    action = _create_superuser if args.command == "create-superuser" else _create_token
    try:
        secret = run_with_session(lambda session: action(args, session))
    except (NotFoundError, InvalidInputError) as error:
        print(f"erp: {error}", file=sys.stderr)
        return 2
    print(secret)
    return 0
