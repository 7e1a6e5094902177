"""The flower launcher: no password outside development means no flower."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from erp.core.config import Settings
from erp.flower import flower_command

ROOT = Path(__file__).resolve().parents[2]
BASE = {"DATABASE_URL": "postgresql://u:p@db.example.com:5432/erp", "_env_file": None}


@pytest.fixture(autouse=True)
def _no_flower_settings_in_environment(monkeypatch):
    for name in ("ERP_ENVIRONMENT", "FLOWER_BASIC_AUTH", "CELERY_FLOWER_PORT"):
        monkeypatch.delenv(name, raising=False)


def make(**overrides) -> Settings:
    return Settings(**{**BASE, **overrides})


def test_production_is_the_default():
    assert make().ERP_ENVIRONMENT == "production"


@pytest.mark.parametrize("auth", [None, ""])
def test_no_auth_in_production_stops_with_one_line_naming_the_variable(auth):
    with pytest.raises(SystemExit) as stopped:
        flower_command(make(FLOWER_BASIC_AUTH=auth))
    message = str(stopped.value.code)
    assert "\n" not in message
    assert message.startswith("erp: configuration error: FLOWER_BASIC_AUTH:")


@pytest.mark.parametrize("auth", ["admin", "admin:", ":secret", "admin:secret,bob"])
def test_malformed_auth_is_refused(auth):
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH: expected user:password"):
        flower_command(make(FLOWER_BASIC_AUTH=auth, ERP_ENVIRONMENT="development"))


def test_auth_reaches_flower_through_its_environment_not_its_arguments():
    command, environment = flower_command(make(FLOWER_BASIC_AUTH="admin:s3cret,ops:pw", CELERY_FLOWER_PORT=5566))
    assert command == ["celery", "-A", "erp.core.celery_app", "flower", "--port=5566"]
    assert environment["FLOWER_BASIC_AUTH"] == "admin:s3cret,ops:pw"
    assert not any("s3cret" in argument for argument in command)


def test_development_starts_without_auth(monkeypatch):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "")
    command, environment = flower_command(make(ERP_ENVIRONMENT="development"))
    assert command[:4] == ["celery", "-A", "erp.core.celery_app", "flower"]
    assert "FLOWER_BASIC_AUTH" not in environment


def test_flower_reads_the_variable_itself():
    # Flower applies FLOWER_<OPTION> environment variables; basic_auth must be one of its options.
    from flower.command import is_flower_envvar

    assert is_flower_envvar("FLOWER_BASIC_AUTH")


def test_the_process_exits_non_zero_with_the_message(tmp_path):
    environment = {
        "PATH": "/usr/bin:/bin",
        "ERP_ENV_FILE": str(tmp_path / "none.env"),
        "DATABASE_URL": BASE["DATABASE_URL"],
        "ERP_ENVIRONMENT": "production",
    }
    result = subprocess.run(
        [sys.executable, "-m", "erp.flower"], env=environment, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("erp: configuration error: FLOWER_BASIC_AUTH:")
