"""What the worker and beat need from the layers above core, found there rather than named here.

Task modules are discovered by walking the package core belongs to: every package's `tasks`
module (Celery's own convention, which every business feature follows), and the modules a
package names in a `TASK_MODULES` tuple of its `__init__.py`, for tasks kept in modules of
other names. Celery's `imports` setting holds what was found (erp.core.celery_app), so the
worker and beat import them when they start, and the web when it asks which tasks exist.
Adding a feature with a `tasks` module touches no file here. The walk imports packages only
(their `__init__.py`, which define nothing), never a module, so it costs a few milliseconds.

A periodic job of the product itself declares its cadence next to its task:

    periodic_job(TASK_NAME, every=lambda settings: settings.HEALTH_CHECK_INTERVAL_SECONDS)

and beat writes the declared jobs to the periodic_tasks table as the entries of Celery's
`beat_schedule` (from_config rows), read once the modules that declare them are imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from erp.core.config import Settings

# The package whose modules are walked: the one this module belongs to.
ROOT_PACKAGE = __name__.partition(".")[0]
# The module name Celery's convention gives a package's tasks.
TASKS_MODULE = "tasks"

# Seconds between two runs under the given settings; None leaves the job out of beat_schedule.
Cadence = Callable[[Settings], float | None]
_periodic_jobs: dict[str, Cadence] = {}


def _raise(name: str) -> None:
    # pkgutil calls this for a package it could not import: that is an error, not "no tasks".
    raise ImportError(f"task discovery could not import the package {name}")


def task_module_names(root: str = ROOT_PACKAGE) -> list[str]:
    """Every task module under the package `root`, in the order found (see the module docstring)."""
    package = importlib.import_module(root)
    names: list[str] = []
    for found in pkgutil.walk_packages(package.__path__, f"{root}.", onerror=_raise):
        if found.ispkg:
            declared: tuple[str, ...] = getattr(importlib.import_module(found.name), "TASK_MODULES", ())
            names.extend(f"{found.name}.{module}" for module in declared)
        elif found.name.rpartition(".")[2] == TASKS_MODULE:
            names.append(found.name)
    return names


def periodic_job(task_name: str, *, every: float | Cadence) -> None:
    """Declare that beat runs the task `task_name` every `every` seconds (a number, or a function
    of the settings, returning None to leave the job out under those settings)."""
    _periodic_jobs[task_name] = every if callable(every) else (lambda _: every)


class DeclaredSchedule(Mapping[str, dict[str, Any]]):
    """The declared periodic jobs as Celery's `beat_schedule` entries, under `settings`.

    Read on first use, not when made: Celery reads its configuration before it imports the task
    modules, and the jobs are declared in them. Reading it imports them first (in beat they are
    imported already), so it is whole in any process.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._entries: dict[str, dict[str, Any]] | None = None

    def _loaded(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            for name in task_module_names():
                importlib.import_module(name)
            cadences = {name: cadence(self._settings) for name, cadence in _periodic_jobs.items()}
            self._entries = {
                name: {"task": name, "schedule": seconds} for name, seconds in cadences.items() if seconds is not None
            }
        return self._entries

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())
