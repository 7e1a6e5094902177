"""`python -m erp doctor`: is this deployment whole? One line per check, exit 1 if one fails.

The checks, in order: the settings load; PostgreSQL answers; its migrations are at the code's
head; Redis answers; a beat ticked recently; workers' heartbeats are fresh; what waits in each
queue. Each gets a few seconds, so a missing service is a failed line, not a hang. A check that
needs one that failed is not run (`skip`). As a release-phase check, before the new processes
run, leave out the processes' own checks: `doctor --skip beat --skip workers`.

Nothing printed carries a secret: errors are `erp.core.errors.error_text` (URLs' passwords
masked) and settings are named, never shown.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from erp.console.cli import common
from erp.console.cli.common import JsonOption
from erp.core import broker
from erp.core.config import get_settings
from erp.core.db import create_async_db_engine
from erp.core.errors import error_text
from erp.core.metrics_router import known_queues
from erp.tasks.api.beat_heartbeats import beat_instances
from erp.tasks.scheduler_models import stale_after_seconds
from erp.tasks.worker_heartbeats import fresh_worker_nodes

CHECK_TIMEOUT_SECONDS = 3.0
CHECKS = ("settings", "postgresql", "migrations", "redis", "beat", "workers", "queues")
# What each check needs to have passed first.
NEEDS = {
    "postgresql": "settings",
    "migrations": "postgresql",
    "redis": "settings",
    "beat": "postgresql",
    "workers": "postgresql",
    "queues": "redis",
}
ALEMBIC_INI = Path(__file__).resolve().parents[3] / "alembic.ini"

Status = Literal["ok", "fail", "skip"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str


class CheckFailed(Exception):
    """A check's finding (not an error of the check itself): the message says what is wrong."""


def check_settings() -> str:
    try:
        settings = get_settings()
    except SystemExit as stop:  # load_settings' one line: the variables and what is wrong, no values
        raise CheckFailed(str(stop.code).removeprefix("erp: ")) from None
    return f"loaded ({settings.ERP_ENVIRONMENT})"


def code_heads() -> set[str]:
    """The migrations' heads in the code (alembic/ beside the package)."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic"))
    return set(ScriptDirectory.from_config(config).get_heads())


async def check_postgresql(connection: AsyncConnection) -> str:
    version = (await connection.execute(text("SHOW server_version"))).scalar_one()
    return f"PostgreSQL {version}"


async def check_migrations(connection: AsyncConnection) -> str:
    heads = code_heads()
    try:
        applied = set((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars())
    except Exception as error:  # no alembic_version table: never migrated
        raise CheckFailed(f"no migration applied ({type(error).__name__}): run `alembic upgrade head`") from None
    if applied != heads:
        raise CheckFailed(
            f"the database is at {', '.join(sorted(applied)) or 'nothing'}, the code at {', '.join(sorted(heads))}:"
            " run `alembic upgrade head`"
        )
    return f"at head ({', '.join(sorted(heads))})"


async def check_redis() -> str:
    settings = get_settings()
    answered = []
    for role, url in (("broker", settings.broker_url), ("results", settings.result_backend_url)):
        client = broker.connect(url)
        try:
            await client.ping()
        finally:
            await client.aclose()
        answered.append(role)
    return f"answers ({' and '.join(answered)})"


async def check_beat(session: AsyncSession) -> str:
    stale_after = stale_after_seconds(get_settings().CELERY_BEAT_DB_SCHEDULER_MAX_INTERVAL_SECONDS)
    beats = await beat_instances(await session.connection())
    alive = [beat for beat in beats if beat.seconds_ago <= stale_after]
    if not alive:
        last = f"the last tick was {beats[0].seconds_ago:g} s ago" if beats else "no beat has ever ticked"
        raise CheckFailed(f"no beat ticked within {stale_after:g} s: {last}")
    return f"{len(alive)} alive, last tick {alive[0].seconds_ago:g} s ago"


async def check_workers(session: AsyncSession) -> str:
    lost_after = get_settings().WORKER_LOST_AFTER_SECONDS
    nodes = await fresh_worker_nodes(lost_after, session=session)
    if not nodes:
        raise CheckFailed(f"no worker's heartbeat is younger than {lost_after} s (WORKER_LOST_AFTER_SECONDS)")
    return f"{len(nodes)} answering: {', '.join(nodes)}"


async def check_queues() -> str:
    client = broker.connect(get_settings().broker_url)
    try:
        stats = await broker.queue_stats(known_queues(), client=client)
    finally:
        await client.aclose()
    return ", ".join(_queue_line(queue, waiting) for queue, waiting in stats.items())


def _queue_line(queue: str, waiting: broker.QueueStats) -> str:
    if waiting.oldest_age_seconds is None:
        return f"{queue}: {waiting.depth} waiting"
    return f"{queue}: {waiting.depth} waiting, the oldest for {waiting.oldest_age_seconds:.0f} s"


async def _timed(check: Callable[[], Awaitable[str]]) -> tuple[Status, str]:
    started = time.monotonic()
    try:
        detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except CheckFailed as finding:
        return "fail", str(finding)
    except TimeoutError:
        return "fail", f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # whatever went wrong is the finding; its text is sanitized
        return "fail", error_text(error)
    return "ok", f"{detail} ({(time.monotonic() - started) * 1000:.0f} ms)"


async def run_checks(skipped: set[str]) -> list[CheckResult]:
    results: dict[str, CheckResult] = {}

    def record(name: str, status: Status, detail: str) -> None:
        results[name] = CheckResult(name, status, detail)

    def runnable(name: str) -> bool:
        if name in skipped:
            record(name, "skip", "left out (--skip)")
            return False
        needed = NEEDS.get(name)
        if needed is not None and results[needed].status != "ok":
            record(name, "skip", f"needs {needed}")
            return False
        return True

    if runnable("settings"):
        try:
            record("settings", "ok", check_settings())
        except CheckFailed as finding:
            record("settings", "fail", str(finding))
    if results["settings"].status != "ok":
        for name in CHECKS[1:]:
            runnable(name)
        return list(results.values())
    engine = create_async_db_engine("erp-doctor", poolclass=NullPool)
    try:
        async with async_sessionmaker(engine)() as session:

            async def on_postgresql(check: Callable[[AsyncConnection], Awaitable[str]]) -> str:
                return await check(await session.connection())

            if runnable("postgresql"):
                record("postgresql", *await _timed(lambda: on_postgresql(check_postgresql)))
            if runnable("migrations"):
                record("migrations", *await _timed(lambda: on_postgresql(check_migrations)))
            if runnable("redis"):
                record("redis", *await _timed(check_redis))
            if runnable("beat"):
                record("beat", *await _timed(lambda: check_beat(session)))
            if runnable("workers"):
                record("workers", *await _timed(lambda: check_workers(session)))
            if runnable("queues"):
                record("queues", *await _timed(check_queues))
    finally:
        await engine.dispose()
    return [results[name] for name in CHECKS]


def doctor(
    skip: Annotated[
        list[str] | None,
        typer.Option(
            "--skip",
            callback=common.one_of(CHECKS[1:]),
            help="leave a check out (repeatable): --skip beat --skip workers before the processes run",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check settings, PostgreSQL, migrations, Redis, beat, workers and queues, one line each; exit 1 if one fails."""
    results = asyncio.run(run_checks(set(skip or ())))
    failed = any(result.status == "fail" for result in results)
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "checks": [asdict(result) for result in results]}, indent=2))
    else:
        for result in results:
            typer.echo(f"{result.status.upper():<4}  {result.name:<10}  {result.detail}")
    if failed:
        raise typer.Exit(common.EXIT_FAILED)
