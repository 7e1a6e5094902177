"""The example feature of docs/writing-a-feature.md works: its own tests pass.

They run in a pytest of their own (docs/examples/conftest.py): the example joins the product's
metadata and task discovery as erp.features.order_audits, which this run's other tests must not
see (they truncate every table of the metadata, and compare it with the migrations).
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO_ROOT


def test_the_example_feature_passes_its_tests_with_the_test_kit(migrated_database, redis_clean):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "docs/examples", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout, run.stdout[-2000:]
