"""Dependencies of the data-import routes."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import Depends

from erp.accounts.dependencies import OrganizationMember
from erp.core.caller import Caller
from erp.core.concurrency_slots import Holder, concurrency_slot
from erp.core.config import get_settings
from erp.core.http_errors import raises


def upload_slot_for(caller: Caller) -> AbstractAsyncContextManager[None]:
    """One of the caller's and one of the organization's concurrent-upload slots, held for the
    block (429 when either is full; see erp.core.concurrency_slots): the API's upload route and
    the console's upload form hold it while the upload is read and stored.

    Retry-After is the body read timeout: the soonest a stalled upload is cut.
    """
    settings = get_settings()
    holders = [
        Holder(f"user:{caller.user_id}", settings.UPLOAD_MAX_CONCURRENT_PER_USER, "you"),
        Holder(
            f"organization:{caller.organization_id}",
            settings.UPLOAD_MAX_CONCURRENT_PER_ORGANIZATION,
            f"organization {caller.organization_id}",
        ),
    ]
    return concurrency_slot("upload", holders, retry_after=math.ceil(settings.HTTP_BODY_READ_TIMEOUT_SECONDS))


async def upload_slot(caller: OrganizationMember) -> AsyncIterator[None]:
    """The upload slot (`upload_slot_for`), held until the upload has been answered."""
    async with upload_slot_for(caller):
        yield


UploadSlot = Annotated[None, Depends(raises(429, 503)(upload_slot))]
