"""Loading the test kit costs nothing: the worker's task discovery imports the package, where
pytest is not installed, and loading the plugin reads no setting and loads no app."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from erp.core.task_registry import task_module_names
from tests.support.processes import REPO_ROOT

LOADED_MODULES = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> set[str]:
    # No DATABASE_URL: a setting read at import would stop the process.
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["ERP_ENV_FILE"] = "/nonexistent/.env"
    run = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES, module], cwd=REPO_ROOT, capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return set(json.loads(run.stdout))


def test_the_package_imports_nothing_not_even_pytest():
    loaded = loaded_by("erp.testing")
    assert "pytest" not in loaded
    assert not {name for name in loaded if name.startswith("erp.") and name not in ("erp.testing",)}


def test_the_plugin_loads_neither_the_app_nor_a_feature_and_reads_no_setting():
    loaded = loaded_by("erp.testing.fixtures")
    assert "pytest" in loaded
    assert not {name for name in loaded if name.startswith(("erp.api", "erp.features", "erp.tasks", "erp.accounts"))}
    assert "fastapi.testclient" not in loaded and "celery.contrib.testing.worker" not in loaded


def test_task_discovery_finds_no_task_module_in_the_kit():
    assert not [name for name in task_module_names() if name.startswith("erp.testing")]
