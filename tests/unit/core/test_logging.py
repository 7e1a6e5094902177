"""Redaction, log context and the two line formats (no services)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from erp.core import tokens
from erp.core.logging import AddContext, JsonLineFormatter, RedactSecrets, TextFormatter, bound, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:s3cretpass@host:6379/0", "redis://:[redacted]@host:6379/0"),
        ("postgresql://erp:hunter2hunter@db/erp?sslmode=require", "postgresql://erp:[redacted]@db/erp?sslmode=require"),
        ("GET /x?access_token=abc123&page=2 HTTP/1.1", "GET /x?access_token=[redacted]&page=2 HTTP/1.1"),
        ("GET /x?a=1&api_key=zzz&token=yyy", "GET /x?a=1&api_key=[redacted]&token=[redacted]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [redacted]"),
        ("redis://host:6379/0 and http://example.com/a:b", "redis://host:6379/0 and http://example.com/a:b"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_known_secrets_are_masked_wherever_they_appear():
    assert redact("the value is plainsecretvalue!", ["plainsecretvalue"]) == "the value is [redacted]!"


def test_record_arguments_keep_their_shape():
    """uvicorn's access formatter unpacks five arguments; they must stay five."""
    secret = tokens.new_token()
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", f"/x?access_token={secret}", "1.1", 200),
        None,
    )
    RedactSecrets().filter(record)
    assert len(record.args) == 5 and record.args[4] == 200
    assert secret not in record.getMessage() and "access_token=[redacted]" in record.getMessage()


def _emit(formatter: logging.Formatter, message: str, *args, exc_info=None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(AddContext())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("test.formats")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with bound(request_id="req-1", task_id="t-1"):
            logger.error(message, *args, exc_info=exc_info)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_the_context_and_stay_on_one_line():
    try:
        raise ValueError("boom\nsecond line redis://:pw123456@host")
    except ValueError as error:
        output = _emit(JsonLineFormatter(), "failed for %s", "redis://u:pw123456@host", exc_info=error)
    assert output.count("\n") == 1
    record = json.loads(output)
    assert record["request_id"] == "req-1" and record["task_id"] == "t-1" and record["level"] == "ERROR"
    assert "pw123456" not in output and record["message"] == "failed for redis://u:[redacted]@host"


def test_text_lines_carry_the_context_and_stay_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError as error:
        output = _emit(TextFormatter(), "failed", exc_info=error)
    assert output.count("\n") == 1
    assert "[request_id=req-1 task_id=t-1]" in output and "Traceback" in output


def test_a_webhook_urls_path_is_masked_and_the_http_clients_request_log_is_quiet(monkeypatch):
    from erp.core.config import Settings
    from erp.core.logging import QUIET_LOGGERS, settings_secrets

    settings = Settings(
        _env_file=None,
        DATABASE_URL="postgresql://localhost/erp",
        ALERT_WEBHOOK_URLS="https://hooks.slack.com/services/T0/B0/xoxsecret,http://127.0.0.1:9/h?key=abcdefgh",
    )
    secrets = settings_secrets(settings)
    line = 'HTTP Request: POST https://hooks.slack.com/services/T0/B0/xoxsecret "HTTP/1.1 200 OK"'
    assert redact(line, secrets) == 'HTTP Request: POST https://hooks.slack.com[redacted] "HTTP/1.1 200 OK"'
    assert "abcdefgh" not in redact("posted to http://127.0.0.1:9/h?key=abcdefgh", secrets)
    assert QUIET_LOGGERS == ("httpx", "httpcore")
