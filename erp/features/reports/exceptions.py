from __future__ import annotations

from erp.core.errors import NotFoundError


class InvalidReportParameters(ValueError):
    """A report task was given parameters it cannot run with; it fails at once, never retried."""


class ReportFileNotFound(NotFoundError):
    """No report file with this id in this organization (never made, or expired)."""
