"""Shared set-up for the benchmarks: their own database and Redis databases."""

from __future__ import annotations

import os

BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/erp_bench")


def use_benchmark_environment() -> None:
    """Point erp (this process and those it starts) at the benchmark database and Redis databases
    (14 and 15, or BENCH_REDIS_BROKER_DB and BENCH_REDIS_RESULT_DB); call it before anything reads
    a setting."""
    from erp.core.config import get_settings

    os.environ.update(
        {
            "ERP_ENV_FILE": "/nonexistent/.env",
            "DATABASE_URL": BENCH_DATABASE_URL,
            "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
            "REDIS_CELERY_BROKER_DB": os.environ.get("BENCH_REDIS_BROKER_DB", "14"),
            "REDIS_CELERY_RESULT_DB": os.environ.get("BENCH_REDIS_RESULT_DB", "15"),
            "LOG_LEVEL": "WARNING",
        }
    )
    for name in ("REDIS_TLS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    get_settings.cache_clear()
