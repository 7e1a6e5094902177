"""The catch-all: an unexpected exception is a JSON 500 in the API's error shape, logged once."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.testclient import TestClient

from erp.core.http_errors import UNEXPECTED_ERROR_MESSAGE, install_error_handlers


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("something nobody expected")

    @app.get("/fine")
    async def fine() -> dict[str, bool]:
        return {"ok": True}

    return app


def test_an_unexpected_exception_is_a_json_500_logged_with_its_traceback(caplog):
    with TestClient(make_app()) as client, caplog.at_level(logging.ERROR, logger="erp.core.http_errors"):
        response = client.get("/boom")
        assert client.get("/fine").json() == {"ok": True}

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"code": "internal_error", "message": UNEXPECTED_ERROR_MESSAGE, "details": None}
    }
    # The client learns nothing of the internals; the log has all of it.
    assert "nobody expected" not in response.text
    [record] = [record for record in caplog.records if record.name == "erp.core.http_errors"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.action == "http.unexpected_error" and "GET /boom" in record.getMessage()


def test_a_500_is_documented_on_every_operation():
    document = make_app().openapi()
    assert all(
        "500" in operation["responses"] for methods in document["paths"].values() for operation in methods.values()
    )
