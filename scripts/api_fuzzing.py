"""`scripts/fuzz_api`: schemathesis over the whole API for as long as you ask.

    scripts/fuzz_api                              # 200 examples per operation and phase, both callers
    scripts/fuzz_api --max-examples 1000 --seed 42 --caller superuser
    scripts/fuzz_api -- --phases fuzzing,stateful # anything after -- goes to `schemathesis run`

Exits non-zero when schemathesis found a failure; each failure is printed with a curl line to
reproduce it. What is set up and checked: tests/support/api_fuzz.py.
"""

from __future__ import annotations

import argparse
import sys

import redis
from sqlalchemy import create_engine

from tests.support import api_fuzz
from tests.support.environment import use_test_environment
from tests.support.fixtures import _recreate_database, alembic_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=200, help="per operation and phase (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (schemathesis prints its seed)")
    parser.add_argument("--caller", choices=("superuser", "member", "both"), default="both")
    parser.add_argument("schemathesis_args", nargs="*", help="after --: passed to `schemathesis run`")
    args = parser.parse_args(argv)

    use_test_environment()
    from alembic import command

    from erp.core.config import get_settings

    settings = get_settings()
    print(f"erp: fuzzing against {settings.sync_database_url} (re-created) and Redis {settings.broker_url}")
    _recreate_database(settings.sync_database_url)
    command.upgrade(alembic_config(), "head")
    engine = create_engine(settings.sync_database_url, hide_parameters=True)
    callers = api_fuzz.seed_accounts(engine)
    runs = []
    try:
        with api_fuzz.beat_heartbeat(engine), api_fuzz.web_server() as base_url:
            api_fuzz.seed_periodic_tasks(base_url, callers)
            if args.caller in ("superuser", "both"):
                print("erp: as a superuser, admin of an organization", flush=True)
                runs.append(
                    api_fuzz.run_schemathesis(
                        base_url,
                        callers.superuser_token,
                        organization_id=callers.organization_id,
                        max_examples=args.max_examples,
                        seed=args.seed,
                        extra=tuple(args.schemathesis_args),
                        capture=False,
                    )
                )
            if args.caller in ("member", "both"):
                print("erp: as a plain member of that organization", flush=True)
                runs.append(
                    api_fuzz.run_schemathesis(
                        base_url,
                        callers.member_token,
                        max_examples=args.max_examples,
                        seed=args.seed,
                        extra=tuple(args.schemathesis_args),
                        capture=False,
                    )
                )
    finally:
        engine.dispose()
        for url in (settings.broker_url, settings.result_backend_url):
            client = redis.Redis.from_url(url)
            client.flushdb()
            client.close()
    return max(run.returncode for run in runs)


if __name__ == "__main__":
    sys.exit(main())
