"""app.json as Heroku (app setups, Heroku Button) and Dokku (formation, health checks) read it."""

from __future__ import annotations

import copy
import ipaddress
import json

import jsonschema
import pytest
from honcho.environ import parse_procfile

from erp.core.config import Settings
from tests.deploy.files import HERE, read

SCHEMA = json.loads((HERE / "app_json.schema.json").read_text(encoding="utf-8"))
# What each add-on sets (Heroku Postgres: DATABASE_URL; Heroku Key-Value Store: REDIS_URL, REDIS_TLS_URL).
ADDON_CONFIG_VARS = {"heroku-postgresql": {"DATABASE_URL"}, "heroku-redis": {"REDIS_URL", "REDIS_TLS_URL"}}


def app_json() -> dict:
    return json.loads(read("app.json"))


def procfile_processes() -> set[str]:
    return set(parse_procfile(read("Procfile")).processes)


def errors(document: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_app_json_matches_the_schema():
    assert errors(app_json()) == []


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc.update(formations={}),
        lambda doc: doc["formation"]["web"].update(quantity="1"),
        lambda doc: doc["env"]["TIME_ZONE"].update(generator="secret"),
        lambda doc: doc["healthchecks"]["web"][0].update(type="ready"),
        lambda doc: doc["healthchecks"]["web"][0].update(command=["true"]),
        lambda doc: doc["healthchecks"]["worker"][0].update(path="/health/live"),
        lambda doc: doc.update(scripts={"dokku": {"pre-deploy": "true"}}),
    ],
    ids=[
        "unknown key",
        "quantity as text",
        "value and generator",
        "unknown check type",
        "command and path",
        "path and uptime",
        "unknown dokku script",
    ],
)
def test_schema_refuses_what_the_platforms_would_not_read(change):
    document = copy.deepcopy(app_json())
    change(document)
    assert errors(document)


def test_formation_runs_web_worker_and_beat_from_the_procfile():
    formation = app_json()["formation"]
    assert set(formation) == {"web", "worker", "beat"}
    assert set(formation) <= procfile_processes()
    assert all(entry["quantity"] >= 1 for entry in formation.values())


def test_health_checks_name_procfile_processes_and_web_checks_readiness():
    healthchecks = app_json()["healthchecks"]
    assert set(healthchecks) == {"web", "worker", "beat"}
    assert set(healthchecks) <= procfile_processes()
    web_paths = [check.get("path") for check in healthchecks["web"]]
    assert "/health/ready" in web_paths
    assert '"/health/ready"' in read("erp/core/probes.py")


def test_add_ons_provide_the_database_and_redis():
    addons = {addon if isinstance(addon, str) else addon["plan"] for addon in app_json()["addons"]}
    assert {"heroku-postgresql", "heroku-redis"} <= addons


def test_env_names_only_real_settings_and_every_required_setting_is_provided():
    document = app_json()
    env = document["env"]
    assert set(env) <= set(Settings.model_fields), "app.json sets a variable the app does not read"
    provided = set(env) | set().union(*(ADDON_CONFIG_VARS.get(addon, set()) for addon in document["addons"]))
    required = {name for name, field in Settings.model_fields.items() if field.is_required()}
    assert required <= provided
    # Heroku asks for a variable at app creation unless it has a value or is marked optional.
    for name, spec in env.items():
        if isinstance(spec, dict) and "value" not in spec and "generator" not in spec:
            assert spec.get("required") is False, f"{name}: give a value or mark it required: false"


def test_flower_is_not_started_by_default():
    assert "flower" not in app_json()["formation"]


def test_heroku_trusts_its_router_network_only():
    value = app_json()["env"]["FORWARDED_ALLOW_IPS"]["value"]
    # What the router connects from; the address it appends to X-Forwarded-For is then the client.
    network = ipaddress.ip_network(value)
    assert network.is_private and network.prefixlen >= 8
    settings = Settings(DATABASE_URL="postgresql://h/db", FORWARDED_ALLOW_IPS=value)  # accepted
    assert value == settings.FORWARDED_ALLOW_IPS
