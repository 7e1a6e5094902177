"""Prometheus metrics: `/metrics` on the web process, with figures from every process of the app.

Where each figure lives, and why:

- **HTTP requests and latency, broker publish errors** happen in the web process. With several
  uvicorn workers (`WEB_CONCURRENCY`) each is a process of its own, so they use
  prometheus-client's multiprocess mode: every process writes its counters to files in one
  directory per web start (`web_metrics_directory`), and a scrape, answered by any of them,
  adds the files up.
- **Task outcomes, run time and the lateness of periodic runs** happen in worker processes,
  which on Heroku and Dokku run on other dynos or containers than the web, with no shared
  filesystem: a multiprocess directory there would never reach the web's `/metrics`. The
  workers add them up in Redis instead (the result-backend database every process already
  shares): one MULTI/EXEC of HINCRBYs per task, from Celery's signals (`record_task`), read by
  the scrape (`task_families`). Labels are the task name and queue, not the worker's hostname:
  containers get a new hostname on every deploy, and Redis would keep every one forever.
- **Queue depth and beat heartbeat age** are read at scrape time (LLEN of kombu's lists;
  the beat_heartbeats table), so they are right however many processes run.

Names follow celery-exporter's where they overlap (`celery_task_succeeded_total`,
`celery_task_failed_total`, `celery_task_runtime`, `celery_queue_length{queue_name}`), so its
dashboards work. prometheus-client decides at import whether it runs in multiprocess mode, so
it is imported only after `prepare_web_metrics` has chosen the directory.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

# --- names --------------------------------------------------------------------------------
HTTP_REQUESTS = "http_requests"  # exposed as http_requests_total
HTTP_DURATION = "http_request_duration_seconds"
PUBLISH_ERRORS = "erp_broker_publish_errors"  # exposed as erp_broker_publish_errors_total
TASK_SUCCEEDED = "celery_task_succeeded"
TASK_FAILED = "celery_task_failed"
TASK_RETRIED = "celery_task_retried"
# Messages a run guard dropped before the task body (a duplicate of a periodic run).
TASK_DROPPED = "erp_task_dropped_duplicates"  # exposed as erp_task_dropped_duplicates_total
TASK_RUNTIME = "celery_task_runtime"
PERIODIC_LATENESS = "erp_periodic_task_lateness_seconds"
QUEUE_LENGTH = "celery_queue_length"
QUEUE_OLDEST_AGE = "erp_queue_oldest_message_age_seconds"
BEAT_HEARTBEAT_AGE = "erp_beat_heartbeat_age_seconds"

# Requests that matched no route share one label value: raw paths would make a series per URL.
UNMATCHED_ROUTE = "<unmatched>"
# ERP tasks run from milliseconds to minutes.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
# The hash the workers add their figures to, in the result-backend database.
TASK_METRICS_KEY = "erp:metrics:tasks"

_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    TASK_SUCCEEDED: ("Tasks that ran to success, by task name.", ("name", "queue_name")),
    TASK_FAILED: ("Tasks that raised, by task name and exception.", ("name", "exception", "queue_name")),
    TASK_RETRIED: ("Tasks that asked to be retried, by task name.", ("name", "queue_name")),
    TASK_DROPPED: (
        "Messages dropped before the task body: duplicates of a periodic run that ran or runs elsewhere.",
        ("name", "queue_name"),
    ),
}
_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    TASK_RUNTIME: ("Run time of tasks in seconds, by task name.", ("name", "queue_name"), RUNTIME_BUCKETS),
    PERIODIC_LATENESS: (
        "Start of a periodic run minus its scheduled time, in seconds, by task name.",
        ("name",),
        LATENESS_BUCKETS,
    ),
}


# --- the web process: multiprocess directory and in-process metrics --------------------------


def _process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (so a reused pid is not taken for the same process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def web_metrics_directory(base: Path | None = None) -> Path:
    """This web start's directory: shared by the uvicorn workers of one supervisor, new per start.

    uvicorn starts its workers (`--workers`, `WEB_CONCURRENCY`) with multiprocessing's spawn,
    so a worker's `parent_process()` is the supervisor; a single uvicorn process has none.
    """
    base = base or Path(tempfile.gettempdir()) / "erp-web-metrics"
    parent = multiprocessing.parent_process()
    owner = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    return base / f"{owner}-{_process_start_time(owner)}"


def _remove_stale_directories(current: Path) -> None:
    """Directories of web starts whose process is gone: their counters belong to nobody now."""
    for entry in current.parent.iterdir():
        if entry == current or not entry.is_dir():
            continue
        pid, _, started = entry.name.partition("-")
        if pid.isdigit() and _alive(int(pid)) and _process_start_time(int(pid)) == started:
            continue
        shutil.rmtree(entry, ignore_errors=True)


def prepare_web_metrics() -> Path:
    """Choose and clean this web start's multiprocess directory; call before prometheus-client is imported."""
    directory = web_metrics_directory()
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_directories(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # Imported earlier by something else: make it pick the multiprocess values after all.
        values.ValueClass = values.get_value_class()
    return directory


class _WebMetrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests: Counter = Counter(
            HTTP_REQUESTS,
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
        )
        self.duration: Histogram = Histogram(
            HTTP_DURATION, "Time to answer HTTP requests in seconds, by method and route template.", ["method", "route"]
        )
        self.publish_errors: Counter = Counter(
            PUBLISH_ERRORS, "Tasks the web process could not hand to the broker, by task name.", ["task"]
        )


@functools.cache
def web_metrics() -> _WebMetrics:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        prepare_web_metrics()
    return _WebMetrics()


def count_publish_error(task_name: str) -> None:
    web_metrics().publish_errors.labels(task=task_name).inc()


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by route template (`/api/v1/tasks/{task_id}`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            metrics = web_metrics()
            metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            metrics.duration.labels(method=scope["method"], route=route).observe(time.perf_counter() - started)


# --- the workers: figures added up in Redis ----------------------------------------------------


def _field(metric: str, labels: dict[str, str], part: str) -> str:
    return json.dumps([metric, part, labels], sort_keys=True, separators=(",", ":"))


def _observe(commands: list[tuple[str, str, float]], metric: str, labels: dict[str, str], value: float) -> None:
    buckets = _HISTOGRAMS[metric][2]
    for bound in buckets:
        if value <= bound:
            commands.append(("hincrby", _field(metric, labels, f"le={bound}"), 1))
    commands.append(("hincrby", _field(metric, labels, "count"), 1))
    commands.append(("hincrbyfloat", _field(metric, labels, "sum"), value))


def task_commands(
    *,
    name: str,
    queue: str,
    outcome: str,
    exception: str | None,
    runtime: float | None,
    lateness: float | None,
) -> list[tuple[str, str, float]]:
    """What one finished task adds to the hash: (command, field, amount)."""
    commands: list[tuple[str, str, float]] = []
    labels = {"name": name, "queue_name": queue}
    if outcome == "succeeded":
        commands.append(("hincrby", _field(TASK_SUCCEEDED, labels, "total"), 1))
    elif outcome == "failed":
        failed = {**labels, "exception": exception or ""}
        commands.append(("hincrby", _field(TASK_FAILED, failed, "total"), 1))
    elif outcome == "retried":
        commands.append(("hincrby", _field(TASK_RETRIED, labels, "total"), 1))
    elif outcome == "dropped":
        commands.append(("hincrby", _field(TASK_DROPPED, labels, "total"), 1))
        return commands  # the body did not run: no run time, no lateness
    if runtime is not None:
        _observe(commands, TASK_RUNTIME, labels, runtime)
    if lateness is not None:
        _observe(commands, PERIODIC_LATENESS, {"name": name}, lateness)
    return commands


def record_task(client: Any, commands: Sequence[tuple[str, str, float]]) -> None:
    """Add one task's figures in one round trip (MULTI/EXEC: a scrape never sees half of them)."""
    pipeline = client.pipeline(transaction=True)
    for command, field, amount in commands:
        getattr(pipeline, command)(TASK_METRICS_KEY, field, amount)
    pipeline.execute()


def task_families(fields: dict[str, str]) -> list[Metric]:
    """The workers' hash as Prometheus metric families."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _COUNTERS}
    histograms: dict[str, dict[tuple[str, ...], dict[str, float]]] = {name: {} for name in _HISTOGRAMS}
    for raw_field, raw_value in fields.items():
        try:
            metric, part, labels = json.loads(raw_field)
            value = float(raw_value)
        except (ValueError, TypeError):
            continue
        if metric in _COUNTERS:
            key = tuple(labels.get(label, "") for label in _COUNTERS[metric][1])
            counters[metric][key] = counters[metric].get(key, 0.0) + value
        elif metric in _HISTOGRAMS:
            key = tuple(labels.get(label, "") for label in _HISTOGRAMS[metric][1])
            histograms[metric].setdefault(key, {})[part] = value
    families: list[Metric] = []
    for metric, (documentation, labels) in _COUNTERS.items():
        counter = CounterMetricFamily(metric, documentation, labels=list(labels))
        for key, value in sorted(counters[metric].items()):
            counter.add_metric(list(key), value)
        families.append(counter)
    for metric, (documentation, labels, buckets) in _HISTOGRAMS.items():
        histogram = HistogramMetricFamily(metric, documentation, labels=list(labels))
        for key, parts in sorted(histograms[metric].items()):
            count = parts.get("count", 0.0)
            points = [(_bucket_label(bound), parts.get(f"le={bound}", 0.0)) for bound in buckets]
            histogram.add_metric(list(key), [*points, ("+Inf", count)], parts.get("sum", 0.0))
        families.append(histogram)
    return families


def _bucket_label(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    label: str = floatToGoString(bound)
    return label


# --- scrape ---------------------------------------------------------------------------------

# A source of figures read at scrape time (queue depth, heartbeat age); layers above core add theirs.
ScrapeSource = Callable[[], Awaitable[list["Metric"]]]


def gauge(name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, documentation, labels=[label])
    for label_value, value in values:
        family.add_metric([label_value], value)
    return family


def exposition(families: Iterable[Metric]) -> tuple[bytes, str]:
    """The web processes' files added up, plus `families`, in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    web_metrics()  # make sure the directory exists even before the first request is counted
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    registry.register(_Families(list(families)))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Families:
    """A collector that hands out families computed before the scrape (they need awaiting)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
