"""The real app plus test-only routes: one that takes as long as asked (a request to have in
flight), one that names the process that answered (which uvicorn worker)."""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI

from erp.api.app import create_app as create_erp_app


def create_app() -> FastAPI:
    app = create_erp_app()

    @app.get("/test/slow")
    async def slow(seconds: float) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @app.get("/test/pid")
    async def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app
