"""`python -m erp.demo`: demo data for scripts/dev, and how to try it.

Makes admin@example.com a superuser and admin of the "Demo" organization, gives it a fresh
token (older demo tokens are revoked: a token's secret cannot be shown twice), and adds an
example schedule that pings every 30 seconds.
"""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from erp.accounts import service as accounts
from erp.core.caller import Caller
from erp.core.db import run_with_session
from erp.tasks import service as periodic_tasks
from erp.tasks.scheduler_models import PeriodicTaskDB
from erp.tasks.schemas import IntervalIn, PeriodicTaskCreate

DEMO_EMAIL = "admin@example.com"
DEMO_ORGANIZATION = "Demo"
DEMO_TOKEN_NAME = "scripts/dev demo"
DEMO_SCHEDULE = "demo: ping every 30 seconds"


async def create_demo(session: AsyncSession) -> str:
    user = await accounts.ensure_superuser(DEMO_EMAIL, "Demo Admin", DEMO_ORGANIZATION, session=session)
    await accounts.revoke_tokens_named(user.id, DEMO_TOKEN_NAME, session=session)
    _, secret = await accounts.create_token(user.id, DEMO_TOKEN_NAME, None, session=session)
    if await session.scalar(select(PeriodicTaskDB.id).where(PeriodicTaskDB.name == DEMO_SCHEDULE)) is None:
        await periodic_tasks.create_periodic_task(
            PeriodicTaskCreate(name=DEMO_SCHEDULE, task="erp.ping", schedule=IntervalIn(kind="interval", every=30)),
            Caller(user_id=user.id, email=user.email, is_superuser=True, organization_id=None, role=None),
            session=session,
        )
    return secret


def main() -> None:
    secret = run_with_session(create_demo)
    base = f"http://localhost:{os.environ.get('PORT', '5000')}"
    print(
        f"""
erp demo: {DEMO_EMAIL} (superuser, admin of "{DEMO_ORGANIZATION}") has this API token, shown once:

    export ERP_TOKEN={secret}

Try it once `honcho` is up:
    curl -s -X POST -H "Authorization: Bearer $ERP_TOKEN" {base}/api/v1/tasks/ping
    curl -s -H "Authorization: Bearer $ERP_TOKEN" {base}/api/v1/tasks/<task_id>
    curl -s -H "Authorization: Bearer $ERP_TOKEN" {base}/api/v1/admin/periodic-tasks
    open {base}/docs
"""
    )


if __name__ == "__main__":
    main()
