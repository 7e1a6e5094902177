"""The real app plus test-only routes: one that takes as long as asked (a request to have in
flight), one that holds one of the web pool's connections as long as asked (a feature that uses
the pool up), one that names the process that answered (which uvicorn worker)."""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI
from sqlalchemy import text

from erp.api.app import create_app as create_erp_app
from erp.core.db import web_engine


def create_app() -> FastAPI:
    app = create_erp_app()

    @app.get("/test/slow")
    async def slow(seconds: float) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @app.get("/test/hold-connection")
    async def hold_connection(seconds: float) -> dict[str, float]:
        async with web_engine().connect() as connection:
            await connection.execute(text("SELECT 1"))
            await asyncio.sleep(seconds)
        return {"held": seconds}

    @app.get("/test/pid")
    async def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app
