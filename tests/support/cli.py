"""Running `python -m erp ...` as its own process, as `heroku run` and `dokku run` start it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.environment import TEST_ENV
from tests.support.processes import REPO_ROOT


def erp(*args: str, timeout: float = 60, **environment: str) -> subprocess.CompletedProcess[str]:
    """The command's exit code, stdout and stderr; `environment` overrides the suite's settings."""
    return subprocess.run(
        [sys.executable, "-m", "erp", *args],
        env={**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO_ROOT), **environment},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
