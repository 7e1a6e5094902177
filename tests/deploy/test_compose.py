"""docker-compose.yml against the Compose specification's JSON schema, and against the Procfile."""

from __future__ import annotations

import copy
import json
import shlex
from importlib import resources

import jsonschema
import pytest
from honcho.environ import parse_procfile

from tests.deploy.files import load_compose, read, with_defaults

APP_SERVICES = {"release", "web", "worker", "beat", "flower"}


def compose_spec_schema() -> dict:
    # The Compose specification's schema (compose-spec/compose-spec, schema/compose-spec.json) as
    # shipped by the check-jsonschema package pinned in requirements/test.txt.
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def interpolated(value):
    """The file as Compose sees it with no variables set: `${X:-d}` -> `d`, `$$` -> `$`."""
    if isinstance(value, dict):
        return {key: interpolated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item) for item in value]
    if isinstance(value, str):
        return with_defaults(value).replace("$$", "$")
    return value


def spec_errors(document: dict) -> list[str]:
    schema = compose_spec_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(interpolated(document))
    ]


def procfile() -> dict[str, str]:
    return parse_procfile(read("Procfile")).processes


def test_compose_file_matches_the_compose_specification():
    assert spec_errors(load_compose()) == []


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["services"]["web"]["depends_on"]["release"].update(condition="service_done"),
        lambda doc: doc["services"]["web"].update(healthcheck={"test": "true", "interval": 5}),
        lambda doc: doc["services"]["worker"].update(commands="celery"),
    ],
    ids=["unknown condition", "interval without unit", "unknown key"],
)
def test_the_specification_schema_is_strict_enough_to_matter(change):
    document = copy.deepcopy(load_compose())
    change(document)
    assert spec_errors(document)


def test_services_are_the_procfile_processes_plus_postgres_and_redis():
    services = set(load_compose()["services"])
    assert services == APP_SERVICES | {"postgres", "redis"}
    assert set(procfile()) == APP_SERVICES


@pytest.mark.parametrize("process", sorted(APP_SERVICES))
def test_each_command_is_the_procfiles_with_variables_at_their_defaults(process):
    service = load_compose()["services"][process]
    assert shlex.split(with_defaults(service["command"])) == shlex.split(with_defaults(procfile()[process]))


def test_start_order_waits_for_healthy_services_and_for_the_migrations():
    services = load_compose()["services"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy"
        assert depends_on["redis"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["release"]["condition"] == "service_completed_successfully"


def test_every_long_running_service_has_a_health_check_or_says_why_not():
    services = load_compose()["services"]
    assert "healthcheck" not in services["web"], "web uses the image's HEALTHCHECK (/health/live)"
    assert "inspect ping" in services["worker"]["healthcheck"]["test"][1]
    for name in ("release", "beat", "flower"):
        assert services[name]["healthcheck"] == {"disable": True}


def test_flower_runs_only_in_the_monitoring_profile_and_gets_its_password_from_the_environment():
    services = load_compose()["services"]
    assert services["flower"]["profiles"] == ["monitoring"]
    assert all("profiles" not in services[name] for name in services if name != "flower")
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"


def test_web_believes_forwarded_for_only_from_the_configured_proxy():
    web = load_compose()["services"]["web"]
    assert "*" not in web["command"]
    assert "--forwarded-allow-ips=${FORWARDED_ALLOW_IPS:-127.0.0.1}" in shlex.split(web["command"])
    # The app's settings see the same value as uvicorn's command line (and refuse '*').
    assert web["environment"]["FORWARDED_ALLOW_IPS"] == "${FORWARDED_ALLOW_IPS:-127.0.0.1}"
