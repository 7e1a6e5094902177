"""A Redis and a PostgreSQL of a test's own, on their own ports, to restart as faults.

The machine's services are shared by every test (and by whatever else runs on the machine):
a test that restarts one of them, or kills it, uses one of these instead.

PostgreSQL will not run as root, so the private cluster is made and run as the `postgres`
user when the tests run as root (as CI does), and as the current user otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import Engine, create_engine, text

from tests.support.processes import REPO_ROOT, ManagedProcess, free_port

POSTGRES_BIN = Path(os.environ.get("TEST_POSTGRES_BIN", ""))


def _postgres_bin() -> Path:
    if POSTGRES_BIN.name and (POSTGRES_BIN / "initdb").exists():
        return POSTGRES_BIN
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError("no initdb found: set TEST_POSTGRES_BIN to PostgreSQL's bin directory")
    return versions[-1].parent


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


class PrivateRedis:
    """redis-server on a free port, keeping nothing on disk: a restart comes back empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="erp-redis-")
        self.process: ManagedProcess | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers. Parallel test workers pick free ports too, so a
        port may be taken between picking and binding: a first start moves to another one; a
        restart keeps its port (its clients reconnect there) and fails if the port is taken."""
        for attempt in range(3):
            command = [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ]
            self.process = ManagedProcess("private-redis", command)
            try:
                _wait(self.answers, 10, f"private Redis answers on port {self.port}")
            except AssertionError:
                output = self.process.output()
                self.kill()
                if self._started_once or attempt == 2:
                    raise AssertionError(f"private Redis did not start on port {self.port}:\n{output}") from None
                self.port = free_port()
                continue
            self._started_once = True
            return

    def answers(self) -> bool:
        """This server answers on its port (not another one that took the port first)."""
        if self.process is None or self.process.process.poll() is not None:
            raise AssertionError("private Redis exited")
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return client.info("server")["process_id"] == self.process.process.pid
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """Gone at once, like a crashed server or a lost host: nothing is saved."""
        if self.process is not None:
            self.process.stop(signal.SIGKILL)
            self.process = None

    def restart_empty(self, down_seconds: float = 0.5) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def client(self, db: int) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory, trust auth).

    Its superuser is named like the user running the tests, as on the machine's cluster, so
    the same URLs work with another port.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = _postgres_bin()
        self.directory = Path(tempfile.mkdtemp(prefix="erp-postgres-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.superuser = pwd.getpwuid(os.getuid()).pw_name
        self._run_as = "postgres" if os.getuid() == 0 else None
        if self._run_as:
            shutil.chown(self.directory, user=self._run_as)
        self._as_owner(
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--auth=trust",
            f"--username={self.superuser}",
            "--encoding=UTF8",
            "--no-sync",
        )

    def _as_owner(self, *command: str) -> None:
        prefix = ["runuser", "-u", self._run_as, "--"] if self._run_as else []
        completed = subprocess.run([*prefix, *command], capture_output=True, text=True, cwd=self.directory)
        if completed.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {completed.stdout}{completed.stderr}")

    def _pg_ctl(self, *arguments: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_owner(
            str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--log", str(self.log), "-o", options, *arguments
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._pg_ctl("start", "--wait", "--timeout=30")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is ended at once; no connection survives."""
        self._pg_ctl("restart", "--mode=fast", "--wait", "--timeout=30")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._pg_ctl("stop", "--mode=immediate", "--wait", "--timeout=30")

    def create_database(self, name: str) -> str:
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def private_stack(database: str = "erp_private", **settings: str):
    """A private PostgreSQL (migrated to head) and Redis, with the environment that points the
    processes a test starts at them (broker database 0, results 1, plus `settings`)."""
    postgres = PrivatePostgres()
    private_redis = PrivateRedis()
    try:
        postgres.start()
        private_redis.start()
        database_url = postgres.create_database(database)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": private_redis.url,
            "REDIS_CELERY_BROKER_DB": "0",
            "REDIS_CELERY_RESULT_DB": "1",
            **settings,
        }
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=REPO_ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
            check=True,
            capture_output=True,
        )
        engine = create_engine(database_url, pool_pre_ping=True)
        try:
            yield PrivateStack(postgres, private_redis, engine, env)
        finally:
            engine.dispose()
    finally:
        private_redis.stop()
        postgres.remove()


@dataclass
class PrivateStack:
    postgres: PrivatePostgres
    redis: PrivateRedis
    engine: Engine
    env: dict[str, str]
