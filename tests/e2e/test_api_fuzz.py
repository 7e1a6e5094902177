"""A property test of the whole API: schemathesis against a real uvicorn, PostgreSQL and Redis.

No 5xx, only documented statuses, bodies matching their documented schemas, for a superuser
and for a plain member (tests/support/api_fuzz.py says what is checked and how). Bounded to keep
the suite's time in hand; `scripts/fuzz_api --max-examples 500` runs it longer.
"""

from __future__ import annotations

import re

import pytest
import redis
from sqlalchemy import text

from erp.core.config import get_settings
from erp.models import Base
from tests.support import api_fuzz

# Per operation and phase: some 4,500 requests per caller (most from the coverage phase), about a
# minute each here.
MAX_EXAMPLES = 40

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fuzzed_api(migrated_database, sync_engine, redis_clean):
    callers = api_fuzz.seed_accounts(sync_engine)
    with api_fuzz.beat_heartbeat(sync_engine), api_fuzz.web_server() as base_url:
        api_fuzz.seed_periodic_tasks(base_url, callers)
        yield base_url, callers
    # Leave nothing behind: ping and "run now" queued messages nobody will run, and the rows
    # (enabled periodic tasks among them) would meet the next test's beat.
    for url in (get_settings().broker_url, get_settings().result_backend_url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with sync_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def assert_no_failures(run) -> None:
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-20000:]}\n{run.stderr[-4000:]}"
    # And it did test: every operation, thousands of requests.
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    print(f"schemathesis: {counts[0] if counts else 'no count'}")
    assert counts and int(counts[1]) == int(counts[2]) > 2000, run.stdout[-4000:]
    operations = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", run.stdout)
    assert operations and operations[1] == operations[2] == operations[3], run.stdout[-4000:]


def test_the_api_as_a_superuser_answers_every_generated_request_as_documented(fuzzed_api):
    base_url, callers = fuzzed_api
    run = api_fuzz.run_schemathesis(
        base_url, callers.superuser_token, organization_id=callers.organization_id, max_examples=MAX_EXAMPLES
    )
    assert_no_failures(run)


def test_the_api_as_a_plain_member_answers_every_generated_request_as_documented(fuzzed_api):
    base_url, callers = fuzzed_api
    assert_no_failures(api_fuzz.run_schemathesis(base_url, callers.member_token, max_examples=MAX_EXAMPLES))
