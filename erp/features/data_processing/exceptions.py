"""What can go wrong with a data import, each kind with the answer it gets."""

from __future__ import annotations

from erp.core.errors import InvalidInputError, NotFoundError


class UploadTooLarge(Exception):
    """The upload is larger than DATA_IMPORT_MAX_UPLOAD_BYTES (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the upload is larger than {limit:,} bytes (DATA_IMPORT_MAX_UPLOAD_BYTES): split the file and import the parts"
        )


class StorageQuotaExceeded(Exception):
    """The upload would take the organization's stored files past its quota (413)."""

    def __init__(self, organization_id: int, quota: int, stored: int) -> None:
        super().__init__(
            f"organization {organization_id} stores {stored:,} bytes of its quota of {quota:,}"
            " (STORAGE_QUOTA_BYTES_PER_ORGANIZATION), and this upload would go beyond it: wait for running"
            " imports to finish (an imported upload is deleted) or for reports to expire (FILE_RETENTION_HOURS)"
        )


class InvalidUpload(InvalidInputError):
    """The upload is not a sales-order CSV: wrong encoding, header or empty (422)."""


class ImportNotFound(NotFoundError):
    """No such import in this organization (404); as a task argument, fails at once."""


class ImportFailed(Exception):
    """The import cannot go on (its file expired, or is not what the upload check saw)."""
