"""Every task module works on its own, as in a worker process, which imports only the task modules
it discovers (erp.core.task_registry) and what their tasks import when they run; the web process
loads none of the worker's pipelines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from erp.core.task_registry import task_module_names
from tests.support.processes import REPO_ROOT

# Resolving every foreign key is what the ORM does at its first flush; a table it points to
# that no imported module declared fails there, in the worker only.
RESOLVE_FOREIGN_KEYS = """
import importlib, sys
importlib.import_module(sys.argv[1])
from erp.core.db import Base
for table in Base.metadata.tables.values():
    for foreign_key in table.foreign_keys:
        foreign_key.column
"""


# Modules a task imports when it runs, not when its module is imported (the web imports the task
# module to dispatch the task).
IMPORTED_BY_RUNNING_TASKS = ["erp.features.data_processing.import_pipeline"]
WEB_PROCESS_MODULES = """
import sys
from erp.api.app import create_app
create_app()
print("\\n".join(sys.modules))
"""


@pytest.mark.parametrize("module", [*task_module_names(), *IMPORTED_BY_RUNNING_TASKS])
def test_a_task_module_imported_alone_resolves_its_tables_foreign_keys(module):
    run = subprocess.run(
        [sys.executable, "-c", RESOLVE_FOREIGN_KEYS, module], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_web_process_does_not_load_what_only_running_tasks_import():
    run = subprocess.run([sys.executable, "-c", WEB_PROCESS_MODULES], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = set(run.stdout.split())
    assert "erp.features.data_processing.tasks" in loaded, "the router imports the task to dispatch it"
    assert not loaded & set(IMPORTED_BY_RUNNING_TASKS)
