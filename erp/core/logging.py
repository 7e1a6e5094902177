"""One log format for the web, worker and beat processes: one line per event, on stdout.

`LOG_FORMAT=text` (default) is for people; `LOG_FORMAT=json` writes one JSON object per line for
log drains (Heroku, Dokku, Loki). Either way each line carries the context it was logged in: the
request id in the web process, and in a worker the task id, task name, periodic task name and
the request id of the request that queued the task (`log_context`).

Secrets are masked in every line, whoever logged it: API tokens, bearer and basic credentials,
passwords in connection URLs, secret-looking query parameters (`?access_token=...`) and the
secrets of our own settings (webhook URLs' paths among them); the HTTP client's request log
(the full URL of every request) is kept to warnings. uvicorn's loggers are pointed at the same handler, so its access
log gets the same treatment; `RedactSecrets` rewrites a record's arguments in place rather than
flattening them, because uvicorn's access formatter unpacks them.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from erp.core.config import Settings, get_settings
from erp.core.tokens import TOKEN_PATTERN

LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"
# The fields a line may carry besides its message, in the order the text format shows them.
CONTEXT_FIELDS = ("request_id", "task_id", "task_name", "periodic_task_name")
# uvicorn's loggers come with handlers of their own (the access log's bypasses the root's
# filters): they are emptied and made to propagate to ours.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# The HTTP client's loggers: httpx logs every request's full URL at INFO, and a webhook's URL
# (alert delivery) is a secret. Their warnings still come through.
QUIET_LOGGERS = ("httpx", "httpcore")
REDACTED = "[redacted]"

_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;]+")
# scheme://user:password@host -> scheme://user:[redacted]@host
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)[^@\s\"'/]+@")
# ?access_token=...&api_key=... (the names clients put credentials under)
_SECRET_PARAMETER = re.compile(
    r"(?i)([?&;](?:access_token|refresh_token|id_token|token|api_key|apikey|key|password|passwd|secret|auth|signature)=)"
    r"[^&\s\"'#;]+"
)

# An immutable empty mapping as the default: every bind makes a new dict, none is changed in place.
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "erp_log_context", default=MappingProxyType({})
)


def log_context() -> Mapping[str, str]:
    """The fields every log line of the current request or task carries."""
    return _context.get()


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Add fields to the log context for the duration of a block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> contextvars.Token[Mapping[str, str]]:
    """Add fields to the log context; `unbind(token)` restores the previous one."""
    values = {name: value for name, value in fields.items() if value}
    return _context.set({**_context.get(), **values})


def unbind(token: contextvars.Token[Mapping[str, str]]) -> None:
    _context.reset(token)


def settings_secrets(settings: Settings) -> list[str]:
    """Secret values of our own settings, masked wherever they appear.

    Of a webhook URL the path and query are the secret (Slack's carry the token in the path):
    a line naming the URL keeps its scheme and host.
    """
    secrets = [settings.METRICS_TOKEN, settings.REDIS_PASSWORD]
    for entry in (settings.FLOWER_BASIC_AUTH or "").split(","):
        secrets.append(entry.partition(":")[2])
    for url in settings.alert_webhook_urls:
        parts = urlsplit(url)
        secrets.append(url[len(f"{parts.scheme}://{parts.netloc}") :])
    # Short values would mask ordinary words; settings validation asks for long ones anyway.
    return [secret for secret in secrets if secret and len(secret) >= 8]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every credential it contains masked."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = TOKEN_PATTERN.sub(f"erp_{REDACTED}", text)
    text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _SECRET_PARAMETER.sub(rf"\1{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message and arguments, whoever logged it.

    The arguments keep their shape (a tuple stays a tuple of the same length), because some
    formatters unpack them: uvicorn's access formatter reads the request line from `args[2]`.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def _clean(self, value: Any) -> Any:
        return redact(value, self.secrets) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: self._clean(value) for key, value in record.args.items()}
        return True


class AddContext(logging.Filter):
    """Copies the log context (request id, task id ...) onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _one_line(text: str) -> str:
    # A traceback must not become several events in a log drain that splits on newlines.
    return text.replace("\r", "").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """`time level [process] logger: message key=value ...`, on one line, secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(LOG_FORMAT)
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name))
        if context:
            line = f"{line} [{context}]"
        return _one_line(redact(line, self.secrets))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: timestamp, level, logger, process, message, context, extras."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(processName)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "processName": "process"},
            timestamp=True,
            # uvicorn puts an ANSI-coloured copy of its messages in this extra.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        # json.dumps escapes newlines, so a traceback stays on its line.
        return redact(super().format(record), self.secrets)


def make_handler(settings: Settings) -> logging.Handler:
    secrets = settings_secrets(settings)
    handler = logging.StreamHandler(sys.stdout)
    formatter: logging.Formatter = (
        JsonLineFormatter(secrets) if settings.LOG_FORMAT == "json" else TextFormatter(secrets)
    )
    handler.setFormatter(formatter)
    handler.addFilter(AddContext())
    handler.addFilter(RedactSecrets(secrets))
    return handler


def configure_logging() -> None:
    settings = get_settings()
    root = logging.getLogger()
    root.handlers[:] = [make_handler(settings)]
    root.setLevel(settings.LOG_LEVEL)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
