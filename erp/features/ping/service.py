"""A round trip through the whole stack: API -> broker -> worker -> PostgreSQL -> result."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def ping_database(*, session: AsyncSession) -> dict[str, Any]:
    database_time = (await session.execute(text("SELECT now()"))).scalar_one()
    return {"pong": True, "database_time": database_time.isoformat(), "worker_pid": os.getpid()}
