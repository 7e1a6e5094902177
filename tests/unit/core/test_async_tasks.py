"""What cannot work is refused with a message saying what to write instead: an async def task
without a keyword-only session (when declared), async def tasks on a pool of threads (at start)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Celery

from erp.core import celery_app as celery_app_module
from erp.core.celery_app import ErpTask


def declaring_app() -> Celery:
    """An app of its own; its tasks are made at once (lazy=False below) and not shared with
    every other app (shared=False), the product's among them."""
    return Celery("declaring", task_cls=ErpTask, set_as_current=False)


def test_an_async_def_task_without_a_keyword_only_session_is_refused_when_declared():
    app = declaring_app()
    with pytest.raises(TypeError, match=r"keyword-only argument: async def no_session\(\.\.\., \*, session"):

        @app.task(name="tests.no_session", shared=False, lazy=False)
        async def no_session(value: str, session: object) -> None: ...


def test_celery_sees_the_signature_without_the_session():
    app = declaring_app()

    @app.task(name="tests.with_session", shared=False, lazy=False)
    async def with_session(value: str, *, session: object) -> str:
        return value

    with_session.__header__("checked")  # what delay() checks: no session to pass
    with pytest.raises(TypeError):
        with_session.__header__("checked", session=None)


@pytest.mark.parametrize("pool", ["threads", "eventlet", "gevent"])
def test_a_worker_on_a_pool_of_threads_refuses_to_start_with_async_def_tasks(pool, monkeypatch):
    tasks = {"tests.async_one": SimpleNamespace(is_async_body=True), "tests.sync_one": SimpleNamespace()}
    monkeypatch.setattr(celery_app_module, "celery_app", SimpleNamespace(tasks=tasks))
    with pytest.raises(
        SystemExit, match=rf"the {pool} pool cannot run async def tasks \(tests.async_one\).*--pool prefork"
    ):
        celery_app_module._refuse_async_tasks_on_shared_pools(sender=SimpleNamespace(pool_cls=pool))


def test_prefork_and_solo_start_with_async_def_tasks(monkeypatch):
    tasks = {"tests.async_one": SimpleNamespace(is_async_body=True)}
    monkeypatch.setattr(celery_app_module, "celery_app", SimpleNamespace(tasks=tasks))
    for pool in ("prefork", "solo"):
        celery_app_module._refuse_async_tasks_on_shared_pools(sender=SimpleNamespace(pool_cls=pool))
