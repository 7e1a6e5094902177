"""Token format, digest and the log filter that keeps secrets out of logs."""

from __future__ import annotations

import io
import logging

from erp.core import tokens
from erp.core.logging import RedactSecrets


def test_tokens_are_random_recognisable_and_hashed():
    first, second = tokens.new_token(), tokens.new_token()
    assert first != second and first.startswith("erp_") and len(first) > 40
    assert tokens.looks_like_token(first) and not tokens.looks_like_token("erp_short")
    assert tokens.token_digest(first) == tokens.token_digest(first) != tokens.token_digest(second)
    assert len(tokens.token_digest(first)) == 64 and first not in tokens.token_digest(first)
    assert tokens.display_prefix(first) == first[:12]


def test_log_records_never_carry_a_token():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    secret = tokens.new_token()
    try:
        logger.warning("request with %s failed", f"Authorization: Bearer {secret}")
        logger.warning("token %s in a message", secret)
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert secret not in output
    assert "Bearer [redacted]" in output and "erp_[redacted]" in output
