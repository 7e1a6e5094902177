"""The workers' figures as they are added up in Redis and read back (no services)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from erp.core import metrics


class FakeHash:
    """Stands in for one Redis hash: what record_task's pipeline would leave behind."""

    def __init__(self) -> None:
        self.fields: dict[str, float] = {}

    def pipeline(self, transaction: bool) -> FakeHash:
        return self

    def hincrby(self, key: str, field: str, amount: float) -> None:
        self.fields[field] = self.fields.get(field, 0) + amount

    hincrbyfloat = hincrby

    def execute(self) -> None:
        pass


def exposition(fields: dict[str, float]) -> str:
    class Families:
        def collect(self):
            return metrics.task_families({key: str(value) for key, value in fields.items()})

    registry = CollectorRegistry()
    registry.register(Families())
    return generate_latest(registry).decode()


def test_outcomes_run_time_and_lateness_read_back_in_celery_exporters_names():
    redis_hash = FakeHash()
    for outcome, runtime in (("succeeded", 0.02), ("succeeded", 3.0), ("failed", 0.5)):
        commands = metrics.task_commands(
            name="erp.ping", queue="celery", outcome=outcome, exception="ValueError", runtime=runtime, lateness=None
        )
        metrics.record_task(redis_hash, commands)
    metrics.record_task(
        redis_hash,
        metrics.task_commands(
            name="erp.health_check", queue="celery", outcome="succeeded", exception=None, runtime=0.1, lateness=0.3
        ),
    )
    text = exposition(redis_hash.fields)
    assert 'celery_task_succeeded_total{name="erp.ping",queue_name="celery"} 2.0' in text
    assert 'celery_task_failed_total{exception="ValueError",name="erp.ping",queue_name="celery"} 1.0' in text
    assert 'celery_task_runtime_bucket{le="0.025",name="erp.ping",queue_name="celery"} 1.0' in text
    assert 'celery_task_runtime_bucket{le="+Inf",name="erp.ping",queue_name="celery"} 3.0' in text
    assert 'celery_task_runtime_sum{name="erp.ping",queue_name="celery"} 3.52' in text
    assert 'erp_periodic_task_lateness_seconds_bucket{le="0.25",name="erp.health_check"} 0.0' in text
    assert 'erp_periodic_task_lateness_seconds_bucket{le="0.5",name="erp.health_check"} 1.0' in text


def test_a_field_nobody_wrote_is_ignored():
    assert "celery_task_succeeded_total{" not in exposition({"not json": 1})


def test_a_dropped_duplicate_is_counted_without_a_run_time():
    redis_hash = FakeHash()
    commands = metrics.task_commands(
        name="erp.ping", queue="celery", outcome="dropped", exception=None, runtime=0.001, lateness=None
    )
    metrics.record_task(redis_hash, commands)
    text = exposition(redis_hash.fields)
    assert 'erp_task_dropped_duplicates_total{name="erp.ping",queue_name="celery"} 1.0' in text
    assert 'celery_task_runtime_count{name="erp.ping"' not in text
