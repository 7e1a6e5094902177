"""One log format for the web, worker and beat processes (they all log to stdout for honcho)."""

from __future__ import annotations

import logging
import re
import sys

from erp.core.config import get_settings
from erp.core.tokens import TOKEN_PATTERN

LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"


_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


class RedactSecrets(logging.Filter):
    """Masks API tokens and bearer credentials in every record, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _BEARER.sub(r"\1[redacted]", TOKEN_PATTERN.sub("erp_[redacted]", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(get_settings().LOG_LEVEL)
