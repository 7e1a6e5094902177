"""The Procfile as honcho parses it, the Dockerfile, and the README and .env.example agreeing with them."""

from __future__ import annotations

import re
import shlex

import pytest
from honcho.environ import parse_procfile
from uvicorn.config import Config

from erp.core.config import Settings
from tests.deploy.files import load_compose, read, with_defaults

PROCESSES = {"web", "worker", "beat", "release", "flower"}


def procfile() -> dict[str, str]:
    return parse_procfile(read("Procfile")).processes


def readme_section(title: str) -> str:
    text = read("README.md")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_procfile_declares_the_processes_and_each_command_parses():
    processes = procfile()
    assert set(processes) == PROCESSES
    for name, command in processes.items():
        assert shlex.split(command), name
    assert processes["web"].split()[0] == "uvicorn"
    assert "--port ${PORT" in processes["web"] and "--host 0.0.0.0" in processes["web"]
    assert processes["flower"] == "python -m erp.flower"


def test_web_worker_count_comes_from_web_concurrency(monkeypatch):
    # uvicorn uses $WEB_CONCURRENCY only when no --workers is given.
    commands = [procfile()["web"], load_compose()["services"]["web"]["command"], read("Dockerfile")]
    assert not any("--workers" in command for command in commands)
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert Config("erp.api.app:create_app", factory=True).workers == 3


HEROKU_SECONDS_BETWEEN_SIGTERM_AND_SIGKILL = 30


def test_web_and_worker_stop_within_herokus_grace():
    web = shlex.split(procfile()["web"])
    assert float(web[web.index("--timeout-graceful-shutdown") + 1]) < HEROKU_SECONDS_BETWEEN_SIGTERM_AND_SIGKILL
    grace = Settings.model_fields["CELERY_WORKER_SHUTDOWN_GRACE_SECONDS"].default
    assert grace < HEROKU_SECONDS_BETWEEN_SIGTERM_AND_SIGKILL


def test_readme_process_table_matches_the_procfile():
    rows = re.findall(r"^\| (\w+) \| `([^`]+)` \|", readme_section("Processes"), flags=re.MULTILINE)
    assert {name for name, _ in rows} == PROCESSES
    for name, shown in rows:
        shown = shown.removesuffix(" …")
        assert procfile()[name].startswith(shown), f"README shows {name} as {shown!r}"


def test_every_setting_is_in_env_example_and_in_the_readme_table():
    env_example = read(".env.example")
    table = readme_section("Configuration")
    for name in Settings.model_fields:
        assert re.search(rf"^(# )?{name}=", env_example, flags=re.MULTILINE), f"{name} missing from .env.example"
        assert f"`{name}`" in table, f"{name} missing from the README's configuration table"


def test_env_example_runs_flower_in_development_mode():
    assert re.search(r"^ERP_ENVIRONMENT=development$", read(".env.example"), flags=re.MULTILINE)


@pytest.mark.parametrize(
    "rule",
    [
        r"^FROM python:\d+\.\d+-slim\n",
        r"^USER (?!root)\w+$",
        r"^HEALTHCHECK .*\n?.*urllib\.request\.urlopen\(.*/health/live.*os\.environ\.get\('PORT'",
        r"^CMD \[\"honcho\", \"start\", \"web\"\]$",
    ],
)
def test_dockerfile(rule):
    assert re.search(rule, read("Dockerfile"), flags=re.MULTILINE)


def test_dockerfile_installs_dependencies_before_copying_the_code():
    lines = [line for line in read("Dockerfile").splitlines() if line and not line.startswith("#")]
    copy_requirements = lines.index("COPY requirements/ requirements/")
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install -r requirements/base.txt"))
    copy_code = lines.index("COPY . .")
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert copy_requirements < install < copy_code < user


def test_docker_image_leaves_out_local_files():
    ignored = set(read(".dockerignore").split())
    assert {".env", ".venv", ".git"} <= ignored
    assert with_defaults("${PORT:-8000}") == "8000"


def forwarded_allow_ips(command: str) -> str:
    args = shlex.split(command)
    [value] = [arg.split("=", 1)[1] for arg in args if arg.startswith("--forwarded-allow-ips=")]
    return value


def test_web_believes_forwarded_for_only_from_the_proxy_the_settings_name():
    web = procfile()["web"]
    assert "--proxy-headers" in shlex.split(web)
    # The shell expands the setting; unset, uvicorn trusts only a proxy on the same host.
    assert forwarded_allow_ips(web) == "${FORWARDED_ALLOW_IPS:-127.0.0.1}"
    assert forwarded_allow_ips(with_defaults(web)) == Settings.model_fields["FORWARDED_ALLOW_IPS"].default
    assert "*" not in web


def test_the_readme_says_what_each_platform_trusts():
    deploying = readme_section("Deploying")
    for target in ("FORWARDED_ALLOW_IPS=10.0.0.0/8", "FORWARDED_ALLOW_IPS=172.17.0.1", "proxy container"):
        assert target in deploying, target
