"""Starting and stopping the real processes (uvicorn, celery worker, celery beat) in tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery", "-A", "erp.core.celery_app"]
# Every task of the product; erp.core lists none: the worker discovers their modules.
PRODUCT_TASKS = (
    "erp.ping",
    "erp.reports.generate_sales_report",
    "erp.data_processing.import_sales_orders",
    "erp.health_check",
    "erp.prune_expired_files",
    "erp.deliver_alerts",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ManagedProcess:
    """A child process whose output goes to a file the test can wait on and show on failure."""

    # Every process started in this run, so none outlives it (see stop_leftover_processes).
    started: ClassVar[list[ManagedProcess]] = []

    def __init__(self, name: str, command: list[str], env: dict | None = None) -> None:
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"erp-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ManagedProcess.started.append(self)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before {text!r}:\n{self.output()}"
                )
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not print {text!r} within {timeout} s:\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send `sig` to the process group and wait; SIGKILL if it will not go."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if not self._log.closed:
            self._log.close()
        return self.process.returncode


def start_web(
    *extra: str, env: dict | None = None, factory: str = "erp.api.app:create_app"
) -> tuple[ManagedProcess, str]:
    """uvicorn on a free port; returns the process and its base URL."""
    port = free_port()
    web = ManagedProcess(
        "web",
        [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port), *extra],
        env,
    )
    web.wait_for_output("Application startup complete", timeout=30)
    # uvicorn binds its port after the app's start-up: another test's process that took the
    # port meanwhile (tests run in parallel) makes it exit here, not answer a later request.
    web.wait_for_output("Uvicorn running on", timeout=30)
    return web, f"http://127.0.0.1:{port}"


def start_worker(
    *extra: str, name: str = "worker", env: dict | None = None, mingle_and_gossip: bool = False
) -> ManagedProcess:
    """A prefork worker; without mingle and gossip (quicker to start) unless asked for, as the
    Procfile's worker has them."""
    quiet = [] if mingle_and_gossip else ["--without-mingle", "--without-gossip"]
    worker = ManagedProcess(name, [*CELERY, "worker", "--pool", "prefork", "--loglevel", "INFO", *quiet, *extra], env)
    worker.wait_for_output("ready.", timeout=60)
    return worker


def start_beat(*extra: str, name: str = "beat", env: dict | None = None) -> ManagedProcess:
    beat = ManagedProcess(
        name,
        [*CELERY, "beat", "-S", "erp.tasks.db_scheduler.DatabaseScheduler", "--loglevel", "INFO", "--pidfile=", *extra],
        env,
    )
    beat.wait_for_output("beat: Starting", timeout=60)
    return beat
