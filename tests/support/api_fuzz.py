"""Fuzzing the whole API with schemathesis: a real uvicorn, the real PostgreSQL and Redis.

Used by tests/integration/test_api_fuzz.py (a bounded run in every test run) and by
scripts/fuzz_api (as long a run as you ask for). schemathesis reads `/openapi.json` and sends
what it describes and what it does not (examples, boundary values, random and malformed input,
sequences of calls following the links between operations); each answer must:

- not be a 5xx (`not_a_server_error`);
- have a status the document lists for the operation (`status_code_conformance`);
- have the content type and headers the document gives (`content_type_conformance`,
  `response_headers_conformance`);
- match the documented schema of its body (`response_schema_conformance`).

The callers are real accounts: a superuser who is admin of an organization, and a plain member
of it. There are rows for ids to hit: the organizations and users, and a periodic task of each
schedule kind. The callers' and their tokens' ids are large random numbers, so fuzzing
`DELETE /me/tokens/{id}` revokes tokens it created, not the one it runs with, and fuzzing
`.../deactivate` deactivates users it created, not the callers. A heartbeat row is kept fresh, as a running
beat would, so `/health/beat` answers 200 rather than its documented 503.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.support.processes import ManagedProcess, free_port

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass(frozen=True)
class FuzzCallers:
    superuser_token: str
    member_token: str
    organization_id: int


def _token_row(user_id: int, name: str):  # -> tuple[ApiTokenDB, str]
    from erp.accounts.models import ApiTokenDB
    from erp.core import tokens

    secret = tokens.new_token()
    row = ApiTokenDB(
        # Far from any id the fuzzer will try (small ids and the bounds).
        id=random.randrange(10**12, 10**15),
        user_id=user_id,
        name=name,
        prefix=tokens.display_prefix(secret),
        token_hash=tokens.token_digest(secret),
    )
    return row, secret


def seed_accounts(engine: Engine) -> FuzzCallers:
    """A superuser admin of "Fuzz organization", a plain member of it, and another organization."""
    from erp.accounts.models import MembershipDB, OrganizationDB, UserDB

    with Session(engine) as session, session.begin():
        organization = session.scalar(select(OrganizationDB).where(OrganizationDB.name == "Fuzz organization"))
        if organization is None:
            organization = OrganizationDB(name="Fuzz organization")
            session.add_all([organization, OrganizationDB(name="Another organization")])
            session.flush()
        suffix = random.randrange(10**9)
        # Ids far from those the fuzzer tries, as the tokens': `POST /admin/users/{id}/deactivate`
        # and `DELETE /admin/organizations/{id}/members/{user_id}` would otherwise end the callers.
        superuser = UserDB(
            id=random.randrange(10**12, 10**15),
            email=f"fuzz-root-{suffix}@example.com",
            full_name="Fuzz root",
            is_superuser=True,
        )
        member = UserDB(
            id=random.randrange(10**12, 10**15), email=f"fuzz-member-{suffix}@example.com", full_name="Fuzz member"
        )
        session.add_all([superuser, member])
        session.flush()
        session.add_all(
            [
                MembershipDB(user_id=superuser.id, organization_id=organization.id, role="admin"),
                MembershipDB(user_id=member.id, organization_id=organization.id, role="member"),
            ]
        )
        superuser_token, superuser_secret = _token_row(superuser.id, "fuzz")
        member_token, member_secret = _token_row(member.id, "fuzz")
        session.add_all([superuser_token, member_token])
        organization_id = organization.id
    return FuzzCallers(superuser_secret, member_secret, organization_id)


SEED_TASKS = [
    {"kind": "interval", "every": 30, "period": "seconds"},
    {"kind": "crontab", "minute": "*/5", "hour": "*", "timezone": "Europe/Berlin"},
    {"kind": "clocked", "clocked_time": "2031-01-01T09:00:00+01:00"},
    {"kind": "solar", "event": "sunrise", "latitude": 52.52, "longitude": 13.4},
]


def seed_periodic_tasks(base_url: str, callers: FuzzCallers) -> None:
    """A periodic task of each schedule kind, created through the API."""
    headers = {"Authorization": f"Bearer {callers.superuser_token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        for number, schedule in enumerate(SEED_TASKS, start=1):
            body = {"name": f"seeded {schedule['kind']} {number}", "task": "erp.ping", "schedule": schedule}
            response = client.post("/api/v1/admin/periodic-tasks", json=body)
            assert response.status_code in (201, 409), response.text


@contextmanager
def web_server() -> Iterator[str]:
    """A real uvicorn serving the app, with the environment of this process; yields its URL."""
    port = free_port()
    web = ManagedProcess(
        "fuzz-web",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "erp.api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        {"LOG_LEVEL": "WARNING"},
    )
    try:
        web.wait_for_output("Application startup complete", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        web.stop()
        errors = [line for line in web.output().splitlines() if "unexpected error" in line or "Traceback" in line]
        if errors:
            print(f"uvicorn logged errors (full log: {web.log_path}):", *errors[:20], sep="\n", file=sys.stderr)


@contextmanager
def beat_heartbeat(engine: Engine) -> Iterator[None]:
    """Keep a heartbeat row fresh, as a running beat would."""
    from erp.tasks.beat.heartbeat import Heartbeat

    heartbeat = Heartbeat("fuzz")
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            heartbeat.record(engine)
            stop.wait(1)

    thread = threading.Thread(target=beat, name="fuzz-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def run_schemathesis(
    base_url: str,
    token: str,
    *,
    organization_id: int | None = None,
    max_examples: int,
    seed: int | None = None,
    extra: tuple[str, ...] = (),
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """One schemathesis run over every operation, as `token`'s caller (its output is returned,
    or with `capture=False` printed as it goes)."""
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        # One worker: Hypothesis' caches are not thread-safe (a KeyError inside schemathesis
        # with several), and the machine has two cores for the server and the fuzzer.
        "--workers",
        "1",
        "--continue-on-failure",
        "--no-color",
        # Nothing kept between runs: each run stands on its own (and leaves no folder behind).
        "--generation-database",
        "none",
        *extra,
    ]
    if organization_id is not None:
        command += ["--header", f"X-Organization-Id: {organization_id}"]
    if seed is not None:
        command += ["--seed", str(seed)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    return subprocess.run(command, capture_output=capture, text=True, env=env, check=False)
