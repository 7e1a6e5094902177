"""Paths of the deploy files, and small readers shared by the deploy tests."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

_DEFAULTED_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def load_compose() -> dict:
    # PyYAML's safe loader applies YAML merge keys (`<<: *app`) as Compose does.
    return yaml.safe_load(read("docker-compose.yml"))


def with_defaults(command: str) -> str:
    """`${PORT:-8000}` -> `8000`: a command as it runs when the variable is not set."""
    return _DEFAULTED_VARIABLE.sub(lambda match: match.group(2), command)
