"""Core finds the task modules and the product's periodic jobs above it, and names none of them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from erp.core.celery_app import celery_config
from erp.core.config import get_settings
from erp.core.task_registry import task_module_names
from tests.support.processes import PRODUCT_TASKS, REPO_ROOT

# A module of a layer above core, as an import or a dotted or slashed name in any text.
ABOVE_CORE = re.compile(r"\berp[./](?:tasks|features|accounts|api|testing)\b")
# The one name core keeps: Celery's setting pointing at the design's beat scheduler.
BEAT_SCHEDULER_SETTING = '"beat_scheduler": "erp.tasks.db_scheduler:DatabaseScheduler",'


def test_every_feature_s_tasks_module_and_the_task_subsystem_s_worker_modules_are_found():
    found = task_module_names()
    for feature in sorted(path.name for path in (REPO_ROOT / "erp/features").iterdir() if (path / "tasks.py").exists()):
        assert f"erp.features.{feature}.tasks" in found
    assert {"erp.tasks.periodic_health_checks", "erp.tasks.worker.run_guard"} <= set(found)
    assert len(found) == len(set(found))


def test_a_process_that_loads_only_the_celery_app_knows_every_task_as_a_worker_does():
    """What `celery -A erp.core.celery_app worker` (and beat) do at start: import the default modules."""
    script = (
        "import json\n"
        "from erp.core.celery_app import celery_app\n"
        "celery_app.loader.import_default_modules()\n"
        "print(json.dumps(sorted(name for name in celery_app.tasks if not name.startswith('celery.'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert set(json.loads(run.stdout)) >= set(PRODUCT_TASKS)


def test_the_periodic_jobs_declared_next_to_their_tasks_make_beat_schedule():
    schedule = celery_config(get_settings())["beat_schedule"]
    assert schedule["erp.health_check"] == {
        "task": "erp.health_check",
        "schedule": get_settings().HEALTH_CHECK_INTERVAL_SECONDS,
    }
    assert schedule["erp.prune_expired_files"] == {"task": "erp.prune_expired_files", "schedule": 3600.0}


def test_no_file_of_core_names_a_module_above_it_but_the_beat_scheduler_setting():
    named = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sorted(Path(REPO_ROOT / "erp/core").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ABOVE_CORE.search(line) and line.strip() != BEAT_SCHEDULER_SETTING
    ]
    assert named == []
