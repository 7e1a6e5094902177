"""Loaded into a worker under test with `-I`: after STALL_CONSUMER_AFTER seconds its consumer
stops issuing BRPOP, as kombu 5.3's Redis transport did after a reconnect (its poller unhooked
from the event loop), while the process stays alive and answers."""

from __future__ import annotations

import os
import threading
from typing import Any

from celery.signals import worker_ready


@worker_ready.connect
def _stall_later(sender: Any = None, **_: Any) -> None:
    seconds = os.environ.get("STALL_CONSUMER_AFTER")
    if seconds is None:
        return
    hub = sender.controller.hub

    def unhook() -> None:
        # What kombu's _on_disconnect did: the transport's poll-start callback leaves the loop.
        hub.call_soon(hub.on_tick.clear)

    timer = threading.Timer(float(seconds), unhook)
    timer.daemon = True
    timer.start()
