"""The real app plus one test-only route that takes as long as asked: a request to have in flight."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from erp.api.app import create_app as create_erp_app


def create_app() -> FastAPI:
    app = create_erp_app()

    @app.get("/test/slow")
    async def slow(seconds: float) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    return app
