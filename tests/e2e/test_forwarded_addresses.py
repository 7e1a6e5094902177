"""Which client address the web records: the Procfile's uvicorn trusts X-Forwarded-For only from
the proxy in front of it (FORWARDED_ALLOW_IPS), so a client cannot choose the address its
requests are logged under.

The real uvicorn, started with the Procfile's web command; clients connect from other loopback
addresses (127.0.0.2, 127.0.0.3), which Linux routes like 127.0.0.1, to play a stranger and a proxy.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
import uuid

import httpx
import pytest

from tests.deploy.files import with_defaults
from tests.deploy.test_procfile_and_docs import procfile
from tests.support.processes import ManagedProcess, free_port

pytestmark = pytest.mark.e2e

SPOOFED = "203.0.113.66"  # TEST-NET-3: nobody's real address


def start_procfile_web(env: dict[str, str] | None = None) -> tuple[ManagedProcess, str]:
    """The Procfile's web command on a free port, its variables expanded as the shell would."""
    given = env or {}
    command = re.sub(
        r"\$\{(\w+):-([^}]*)\}", lambda match: given.get(match.group(1), match.group(0)), procfile()["web"]
    )
    args = shlex.split(with_defaults(command))
    assert args[0] == "uvicorn"
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    web = ManagedProcess("web", [sys.executable, "-m", *args], env=given)
    web.wait_for_output("Application startup complete", timeout=30)
    return web, f"http://127.0.0.1:{port}"


def logged_client(web: ManagedProcess, url: str, source: str, headers: dict[str, str]) -> str:
    """The client address uvicorn's access line records for one request from `source`."""
    marker = uuid.uuid4().hex
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=10) as client:
        assert client.get(f"/health/live?probe={marker}", headers=headers).status_code == 200
    for _ in range(50):
        lines = [line for line in web.output().splitlines() if marker in line and '"GET /health/live' in line]
        if lines:
            # uvicorn's access line: `<client host>:<port> - "GET ... HTTP/1.1" 200`
            before = lines[0].split(' - "GET', 1)[0]
            return before.rsplit(" ", 1)[-1].rsplit(":", 1)[0]
        time.sleep(0.1)
    raise AssertionError(f"no access line for the probe:\n{web.output()[-3000:]}")


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_not_the_client_address():
    web, url = start_procfile_web()
    try:
        # A stranger (not the proxy in front) says it forwards for someone else: not believed.
        assert logged_client(web, url, "127.0.0.2", {"X-Forwarded-For": SPOOFED}) == "127.0.0.2"
        # The default trusted proxy is the loopback one (a proxy on the same host).
        assert logged_client(web, url, "127.0.0.1", {"X-Forwarded-For": "198.51.100.7"}) == "198.51.100.7"
    finally:
        web.stop()


def test_behind_a_trusted_proxy_the_address_it_appended_is_recorded_not_the_clients_claim():
    # Heroku's router appends the address it saw to whatever X-Forwarded-For the client sent: the
    # rightmost untrusted entry is the client, however many addresses the client put before it.
    web, url = start_procfile_web({"FORWARDED_ALLOW_IPS": "127.0.0.3"})
    try:
        proxied = {"X-Forwarded-For": f"{SPOOFED}, 198.51.100.7"}
        assert logged_client(web, url, "127.0.0.3", proxied) == "198.51.100.7"
        # Not the proxy: its header is ignored altogether.
        assert logged_client(web, url, "127.0.0.2", proxied) == "127.0.0.2"
    finally:
        web.stop()
