"""kombu's Redis transport, with the reconnect defect of kombu 5.3 mended.

Celery uses it for every broker connection (`broker_transport` in erp.core.celery_app); the URL
(`redis://` or `rediss://`) is read as before.

The defect (celery#8030, #8091, #9054; mended upstream in kombu 5.4.0 by kombu#2007, which this
product cannot take: it pins kombu 5.3 with redis-py 5.0): every channel's Redis connection
calls `Channel._on_connection_disconnect` when it disconnects, and that tells the transport's
poller, whose event-loop hook then removes its `on_poll_start` from the worker's loop. A
channel that is still being created, and whose first PING fails (Redis is restarting, or
refusing connections while it loads), disconnects too, before it was ever added to the poller;
it thereby unhooks the poller of the connection that is consuming. The worker then reconnects,
logs "Connected to redis://...", and never issues another BRPOP: it is alive and takes nothing,
however long the queue grows. Here a channel reports a disconnect only once it was registered
with the poller, as kombu 5.4 does.

Remove this module when the product moves to kombu 5.4 or later.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    # False until the channel is in the poller; a failed PING in __init__ leaves it False.
    _registered = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._registered = True

    def _on_connection_disconnect(self, connection: Any) -> None:
        if self._registered:
            super()._on_connection_disconnect(connection)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


# What `broker_transport` names (kombu resolves "module:Class").
TRANSPORT = f"{__name__}:Transport"
