"""The small pieces of HTML every console page repeats (a state, a status, a moment in time, a
last run, a row of the runs and schedules tables), and the text filters they use, as Python
functions the templates call.

Why not Jinja macros: a macro call builds a frame and a context of its own, about 10 µs here,
and a page of 50 runs or schedules calls these 150 to 250 times, which was as long as the page's
query once its index was right (scripts/bench_console). Each returns `Markup`, its values
escaped, so a template prints it as it is. Pure: no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Protocol

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from erp.console.views import ScheduleRow
    from erp.tasks.scheduler_models import PeriodicTaskRunDB


def utc(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def in_zone(moment: datetime | None, zone: tzinfo) -> str:
    if moment is None:
        return ""
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''}".strip()


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) < 10:
        return f"{value:.2f} s"
    if abs(value) < 120:
        return f"{value:.0f} s"
    minutes, whole_seconds = divmod(round(value), 60)
    if minutes < 120:
        return f"{minutes} min {whole_seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def state(value: str, reason: str | None = None) -> Markup:
    """An occurrence's state (and skip reason), coloured by class."""
    words = f"{value} ({reason})" if reason else value
    return Markup(f'<span class="state s-{escape(value)}">{escape(words)}</span>')


def status(value: str) -> Markup:
    """A schedule's status (active, paused, failing, ...), coloured by class."""
    return Markup(f'<span class="status st-{escape(value)}">{escape(value)}</span>')


def moment(value: datetime | None, zone: tzinfo | None = None) -> Markup:
    """A time, in `zone` (else UTC), machine-readable in its `datetime` attribute."""
    if not value:
        return Markup("")
    shown = in_zone(value, zone) if zone else utc(value)
    return Markup(f'<time datetime="{escape(iso(value))}">{escape(shown)}</time>')


def viewer(value: datetime | None) -> Markup:
    """A time the console's script writes in the viewer's own zone."""
    if not value:
        return Markup("")
    return Markup(f'<time class="viewer" datetime="{escape(iso(value))}"></time>')


class ShownRun(Protocol):
    """What a last run shows (erp.console.views.LastRun)."""

    @property
    def state(self) -> str: ...

    @property
    def skip_reason(self) -> str | None: ...

    @property
    def duration_seconds(self) -> float | None: ...

    @property
    def lateness_seconds(self) -> float | None: ...


def last_run(run: ShownRun | None) -> Markup:
    """A schedule's last run: its state, how long it took and how late it started."""
    if not run:
        return Markup('<span class="muted">never ran</span>')
    parts = [state(run.state, run.skip_reason), "\n"]
    if run.duration_seconds is not None:
        parts.append(f'<span class="figure" title="duration">{escape(seconds(run.duration_seconds))}</span>')
    if run.lateness_seconds is not None:
        parts.append(
            f'<span class="figure" title="lateness: start minus slot">late {escape(seconds(run.lateness_seconds))}</span>'
        )
    return Markup("".join(parts))


# --- rows of the two long tables ------------------------------------------------------------------
# A page's 50 rows of ten cells through Jinja took 1.5 ms (an escape, an attribute lookup and a
# generator step per value), three times the API's JSON of the same rows; drawn here, as the
# sparkline is, a row is one f-string.


def truncated(text: str, length: int = 200, end: str = "...", leeway: int = 5) -> str:
    """Jinja's `truncate` filter's rule: cut at a word boundary, unless only a little is over."""
    if len(text) <= length + leeway:
        return text
    return text[: length - len(end)].rsplit(" ", 1)[0] + end


def run_row(run: PeriodicTaskRunDB) -> Markup:
    """One occurrence as a row of the runs tables (regions/runs_table.html)."""
    duration = ""
    if run.started_at and run.finished_at:
        duration = seconds((run.finished_at - run.started_at).total_seconds())
    error = ""
    if run.error_type:
        error = f"<code>{escape(run.error_type)}</code> {escape(truncated(run.error_message or ''))}"
    return Markup(
        f"<tr><td>{moment(run.scheduled_at)}</td>"
        f'<td><a href="/console/schedules/{run.periodic_task_id}">{escape(run.periodic_task_name)}</a></td>'
        f"<td><code>{escape(run.task_name)}</code></td><td>{escape(run.origin)}</td>"
        f"<td>{state(run.state, run.skip_reason)}</td><td>{moment(run.started_at)}</td>"
        f"<td>{escape(duration)}</td><td>{escape(seconds(run.lateness_seconds))}</td>"
        f"<td>{escape(run.worker or '')}</td><td>{error}</td></tr>\n"
    )


def schedule_row(row: ScheduleRow) -> Markup:
    """One schedule as a row of the schedules page (regions/schedules_table.html)."""
    task = row.task
    name = escape(task.name)
    jitter = f' <span class="muted">(+ up to {task.jitter_seconds} s jitter)</span>' if task.jitter_seconds else ""
    if task.next_run_at:
        next_run = f'{moment(task.next_run_at, row.zone)}<div class="muted">{viewer(task.next_run_at)}</div>'
    else:
        next_run = '<span class="muted">none</span>'
    return Markup(
        f'<tr data-schedule="{name}">'
        f'<td><input type="checkbox" name="id" value="{task.id}" form="bulk" aria-label="Tick {name}"></td>'
        f'<td><a href="/console/schedules/{task.id}">{name}</a></td><td><code>{escape(task.task)}</code></td>'
        f"<td>{escape(row.words)}{jitter}</td><td>{next_run}</td><td>{last_run(row.last_run)}</td>"
        f"<td>{escape(row.history)}</td><td>{status(row.status)}</td></tr>\n"
    )


GLOBALS = {
    "state": state,
    "status": status,
    "moment": moment,
    "viewer": viewer,
    "last_run": last_run,
    "run_row": run_row,
    "schedule_row": schedule_row,
}
FILTERS = {"utc": utc, "in_zone": in_zone, "seconds": seconds, "iso": iso}
