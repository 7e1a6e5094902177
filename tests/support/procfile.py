"""Running the Procfile's own command lines the way honcho (and Heroku) run them."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from honcho.environ import parse_procfile

from tests.support.processes import REPO_ROOT, ManagedProcess, free_port

# The programs the Procfile names (uvicorn, celery, alembic) live beside this Python.
BIN = str(Path(sys.executable).parent)


def procfile_commands() -> dict[str, str]:
    return parse_procfile((REPO_ROOT / "Procfile").read_text()).processes


def shell_env(env: dict | None = None) -> dict:
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}


def start_procfile_process(
    name: str, *, port: int | None = None, env: dict | None = None, replace: dict[str, str] | None = None
) -> ManagedProcess:
    """One Procfile line through `sh -c`, as honcho runs it (`shell=True`), with PORT set as honcho sets it.

    `replace` swaps a part of the command for another (e.g. a test app factory for the real one).
    """
    command = procfile_commands()[name]
    for old, new in (replace or {}).items():
        assert old in command, f"{old!r} is not in the Procfile's {name} command"
        command = command.replace(old, new)
    extra = {"PORT": str(port)} if port is not None else {}
    return ManagedProcess(name, ["/bin/sh", "-c", command], shell_env({**extra, **(env or {})}))


def start_honcho(*processes: str, env: dict | None = None) -> tuple[ManagedProcess, int]:
    """`honcho start web worker beat` on the repository's Procfile, with an empty env file; returns its base port."""
    port = free_port()
    # An empty env file: a developer's .env must not point the processes elsewhere.
    env_file = tempfile.mkstemp(prefix="erp-honcho-", suffix=".env")[1]
    command = [str(Path(BIN) / "honcho"), "-f", str(REPO_ROOT / "Procfile"), "-e", env_file]
    honcho = ManagedProcess("honcho", [*command, "start", "-p", str(port), *processes], shell_env(env))
    return honcho, port
