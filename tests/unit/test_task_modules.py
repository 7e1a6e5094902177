"""Every task module works on its own, as in a worker process, which imports only TASK_MODULES."""

from __future__ import annotations

import subprocess
import sys

import pytest

from erp.core.celery_app import TASK_MODULES
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


@pytest.mark.parametrize("module", TASK_MODULES)
def test_a_task_module_imported_alone_resolves_its_tables_foreign_keys(module):
    run = subprocess.run(
        [sys.executable, "-c", RESOLVE_FOREIGN_KEYS, module], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
