"""`python -m erp.core.preflight [--create-database]`: can we reach PostgreSQL and Redis?

Run by scripts/dev before anything starts, so a missing service is one clear line naming the
URL that was tried, not a traceback from three processes.
"""

from __future__ import annotations

import argparse
import sys

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from erp.core.config import get_settings
from erp.core.db import HIDE_PARAMETERS
from erp.core.errors import error_text

CONNECT_TIMEOUT_SECONDS = 3


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True) if "://" in url else url


def check_redis() -> None:
    client = redis.Redis.from_url(get_settings().broker_url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        client.ping()
    except redis.RedisError as error:
        raise SystemExit(f"erp: cannot reach Redis at {_redacted(get_settings().broker_url)}: {error}") from None
    finally:
        client.close()


def _create_database_if_missing(url: URL) -> None:
    server = create_engine(
        url.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        hide_parameters=HIDE_PARAMETERS,
    )
    try:
        with server.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).scalar()
            if not exists:
                # The name comes from configuration, not from a user; quoted as an identifier.
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
                print(f"erp: created database {url.database}")
    finally:
        server.dispose()


def ensure_database(create: bool) -> None:
    """Connect to the database; with `create`, create it first if the server lacks it."""
    url = make_url(get_settings().sync_database_url)
    engine = create_engine(
        url, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}, hide_parameters=HIDE_PARAMETERS
    )
    try:
        if create:
            _create_database_if_missing(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        raise SystemExit(
            f"erp: cannot reach PostgreSQL at {url.render_as_string(hide_password=True)}: {error_text(error)}"
        ) from None
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--create-database", action="store_true", help="create the database if missing")
    args = parser.parse_args(argv)
    ensure_database(create=args.create_database)
    check_redis()
    print("erp: PostgreSQL and Redis are reachable")


if __name__ == "__main__":
    main(sys.argv[1:])
