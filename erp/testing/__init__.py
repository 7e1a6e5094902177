"""erp's test kit: pytest fixtures for testing a feature's tasks, services and endpoints.

    # conftest.py
    pytest_plugins = ["erp.testing"]

| fixture | scope | what it gives |
|---|---|---|
| `erp_database` | session | the database the other fixtures use: the settings' `DATABASE_URL`, which must be migrated; override it to create or migrate one first |
| `erp_eager` | test | eager mode: a task queued in the test runs at once, in this process, and stores its result (erp.core.eager) |
| `erp_worker` | module | a real Celery worker (solo pool) in a thread of this process, on the settings' Redis and PostgreSQL |
| `erp_app` | session | the app `erp_api` serves, `erp.api.app.create_app()`; override it to include a router the app does not include yet |
| `erp_api` | session | `erp_app` over Starlette's `TestClient` (ASGI, no server) |
| `erp_sync_engine` | session | a synchronous engine on the kit's database, for a test's own rows and checks |
| `erp_make_user` | test | `erp_make_user(role="member", superuser=False, organization=None)`: a user with an API token; `.headers` authenticate as it |
| `erp_session` | test | an `AsyncSession` in a transaction rolled back after the test (async tests: `@pytest.mark.anyio`) |
| `erp_clock` | test | a clock `erp.core.clock.utcnow()` reads while the test runs: `set`, `advance`, `now` |

Beside the fixtures: `erp.testing.waiting.finished_task(client, headers, status_url)` polls a
task's status URL until it has finished (for tests with `erp_worker`), and
`erp.testing.worker.in_process_worker()` is the worker of `erp_worker` as a context manager.

The kit never creates, drops or migrates a database and never flushes Redis: where the tests run
is the settings' business (set `DATABASE_URL` and the Redis settings before the first fixture
runs). docs/writing-a-feature.md shows it at work.

This package imports nothing but its fixtures module, and that only when pytest loads it: the
worker's task discovery imports every package of erp, this one included, where pytest is not
installed.
"""

pytest_plugins = ["erp.testing.fixtures"]
