"""At most N tasks of a kind per organization queued or running at once (reports, imports).

A report or an import costs a worker process for seconds to minutes; an organization that
queues fifty of them puts every other organization's work behind fifty long tasks. So a task
declares its limit next to itself, as a periodic job declares its cadence:

    limit_running(TASK_NAME, kind="report", setting="REPORT_MAX_RUNNING_PER_ORGANIZATION")

and a dispatch of it takes one of the organization's slots (erp.core.quotas, on the slots of
erp.core.concurrency_slots, a sorted set in Redis shared by every web process) or is a 429.
The slot id is the task id. Who gives it back, and when:

- queued: the slot lapses after `QUEUED_LEASE_SECONDS` if the task never starts (its message
  lost with Redis, or the web killed between the slot and the publish);
- started (task_prerun, in the process running it): the slot's lease becomes
  TASK_SLOT_LEASE_SECONDS, renewed every third of it by a thread of that process, so a worker
  killed mid-task (SIGKILL, OOM, hard time limit) gives the slot back within the lease. A
  redelivery of its message takes the slot again when it starts;
- retried (task_postrun in state RETRY): queued again, with the queued lease;
- finished, failed or revoked (task_postrun, task_revoked): given back at once.

This module is connected by the Celery app (erp.core.celery_app) and reads no setting and
opens no connection at import; the worker's Redis client is the result backend's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import states

from erp.core.config import Settings, get_settings

logger = logging.getLogger(__name__)

# Longer than a task should ever wait in the queue here; what a slot lasts if its task is lost
# before it starts (see the module docstring).
QUEUED_LEASE_SECONDS = 3600.0
ORGANIZATION_HOLDER = "organization:{organization_id}"


@dataclass(frozen=True)
class RunningLimit:
    kind: str  # "report", "import": the slots' name in Redis and in the 429's message
    setting: str  # the setting holding the limit, named in the 429's message

    def per_organization(self, settings: Settings) -> int:
        limit: int = getattr(settings, self.setting)
        return limit


_limits: dict[str, RunningLimit] = {}


def limit_running(task_name: str, *, kind: str, setting: str) -> None:
    """Declare that one organization may have at most as many tasks `task_name` queued or
    running at once as the setting `setting` says."""
    if setting not in Settings.model_fields:
        raise ValueError(f"limit_running: {setting!r} is not a setting of erp.core.config")
    _limits[task_name] = RunningLimit(kind, setting)


def running_limit(task_name: str) -> RunningLimit | None:
    return _limits.get(task_name)


def organization_holder(organization_id: int) -> str:
    return ORGANIZATION_HOLDER.format(organization_id=organization_id)


# --- the worker's side --------------------------------------------------------------------


class _Renewals:
    """The running slots this process holds, renewed from one daemon thread (made on first use,
    after the fork: a prefork child gets its own)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Any, list[str]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, slot_id: str, client: Any, keys: list[str]) -> None:
        with self._lock:
            self._held[slot_id] = (client, keys)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="erp-slot-renewals", daemon=True)
                self._thread.start()

    def discard(self, slot_id: str) -> None:
        with self._lock:
            self._held.pop(slot_id, None)

    def _run(self) -> None:
        from erp.core import concurrency_slots

        while True:
            lease = get_settings().TASK_SLOT_LEASE_SECONDS
            time.sleep(lease / 3)
            with self._lock:
                held = list(self._held.items())
            for slot_id, (client, keys) in held:
                try:
                    concurrency_slots.hold(client, keys, slot_id, lease)
                except Exception as error:  # it lapses by itself if Redis stays away
                    logger.warning(
                        "could not renew a running task's slot: %s",
                        type(error).__name__,
                        extra={"action": "running_slot.renew_failed"},
                    )


_renewals = _Renewals()


def _slot_keys(task: Any, task_id: str) -> tuple[Any, list[str]] | None:
    """The result backend's client and the keys of `task_id`'s slot; None for an unlimited task
    or one nobody dispatched through erp.core.dispatch (no owner record: no slot)."""
    limit = running_limit(getattr(task, "name", ""))
    if limit is None:
        return None
    from erp.core import concurrency_slots
    from erp.core.task_owners import OWNER_KEY

    client = task.app.backend.client
    organization_id = client.hget(OWNER_KEY.format(task_id=task_id), "organization_id")
    if not organization_id:
        return None
    holder = organization_holder(int(organization_id))
    return client, concurrency_slots.slot_keys(limit.kind, [holder])


def _safely(step: str, action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as error:  # a slot must never fail the task; it lapses by itself
        logger.warning(
            "running slot not %s: %s", step, type(error).__name__, extra={"action": f"running_slot.{step}_failed"}
        )


def task_started(task_id: str, task: Any, **_: Any) -> None:
    """task_prerun: the slot is this process's now, on the short lease, renewed."""

    def start() -> None:
        from erp.core import concurrency_slots

        found = _slot_keys(task, task_id)
        if found is None:
            return
        client, keys = found
        concurrency_slots.hold(client, keys, task_id, get_settings().TASK_SLOT_LEASE_SECONDS)
        _renewals.add(task_id, client, keys)

    _safely("held", start)


def task_finished(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    """task_postrun: given back, unless the task is to run again (a retry waits in the queue)."""

    def finish() -> None:
        from erp.core import concurrency_slots

        _renewals.discard(task_id)
        found = _slot_keys(task, task_id)
        if found is None:
            return
        client, keys = found
        if state == states.RETRY:
            concurrency_slots.hold(client, keys, task_id, QUEUED_LEASE_SECONDS)
        else:
            concurrency_slots.release(client, keys, task_id)
            logger.debug("running slot given back", extra={"action": "running_slot.released", "task_id": task_id})

    _safely("released", finish)


def task_revoked(request: Any = None, sender: Any = None, **_: Any) -> None:
    """task_revoked (the worker's main process, for a task revoked before it ran): given back."""
    task_id = getattr(request, "id", None)
    if not task_id or sender is None:
        return

    def revoke() -> None:
        from erp.core import concurrency_slots

        _renewals.discard(task_id)
        found = _slot_keys(sender, task_id)
        if found is not None:
            concurrency_slots.release(*found, task_id)

    _safely("released", revoke)
