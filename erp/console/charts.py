"""The overview's activity chart: occurrences per bucket of time over a day, stacked by outcome,
drawn on the server as SVG (for the same reasons as the sparkline: no chart library to pin, no
inline styles, readable without JavaScript). Pure: the caller passes the counts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

# Outcomes stacked from the bottom; every other state (planned, sent, started, ...) is "in flight".
OUTCOMES = ("succeeded", "failed", "skipped", "revoked", "in flight")
BAR_WIDTH = 4
BAR_GAP = 1
HEIGHT = 60


def outcome_of(state: str) -> str:
    return state if state in OUTCOMES else "in flight"


def activity_chart(buckets: Sequence[Mapping[str, int]], start: datetime, bucket: timedelta) -> Markup:
    """Bars of `buckets` (outcome -> count, oldest first, each `bucket` long from `start`),
    scaled to the busiest one."""
    busiest = max((sum(counts.values()) for counts in buckets), default=0)
    width = max(1, len(buckets) * (BAR_WIDTH + BAR_GAP) - BAR_GAP)
    total = sum(sum(counts.values()) for counts in buckets)
    label = (
        f"{total} occurrences from {start.astimezone(UTC):%Y-%m-%d %H:%M} UTC, busiest {busiest} per {_span(bucket)}"
    )
    parts: list[str] = []
    for index, counts in enumerate(buckets):
        if not counts:
            continue
        x = index * (BAR_WIDTH + BAR_GAP)
        begin = (start + index * bucket).astimezone(UTC)
        summary = ", ".join(f"{counts[name]} {name}" for name in OUTCOMES if counts.get(name))
        parts.append(f"<g><title>{escape(f'{begin:%H:%M} UTC: {summary}')}</title>")
        bottom = float(HEIGHT)
        for name in OUTCOMES:
            count = counts.get(name, 0)
            if not count:
                continue
            height = max(1.0, HEIGHT * count / busiest)
            bottom -= height
            css = "s-" + name.replace(" ", "-")
            parts.append(
                f'<rect class="bar {css}" x="{x}" y="{bottom:.1f}" width="{BAR_WIDTH}" height="{height:.1f}"></rect>'
            )
        parts.append("</g>")
    return Markup(
        f'<svg class="activity" role="img" aria-label="{escape(label)}" width="{width}" height="{HEIGHT}"'
        f' viewBox="0 0 {width} {HEIGHT}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="track" x="0" y="{HEIGHT - 1}" width="{width}" height="1"></rect>{"".join(parts)}</svg>'
    )


def _span(bucket: timedelta) -> str:
    minutes = int(bucket.total_seconds() // 60)
    return f"{minutes} minutes" if minutes != 1 else "minute"


# The load heatmap: one cell per minute, one row per hour, shaded in this many steps.
HEAT_LEVELS = 5
CELL_WIDTH = 9
CELL_HEIGHT = 14
LABEL_WIDTH = 44


def heat_level(count: int, busiest: int) -> int:
    """0 for an empty minute, else 1..HEAT_LEVELS by its share of the busiest minute."""
    if count <= 0 or busiest <= 0:
        return 0
    return max(1, min(HEAT_LEVELS, -(-count * HEAT_LEVELS // busiest)))


def load_heatmap(per_minute: Sequence[int], start: datetime, link: Callable[[datetime], str] | None = None) -> Markup:
    """The forecast as a grid: hours down, minutes across (from `start`, a whole hour), each
    cell shaded by its occurrences against the busiest minute and titled with its count; with
    `link`, a busy cell links to the page listing that minute's schedules."""
    busiest = max(per_minute, default=0)
    hours = -(-len(per_minute) // 60)
    width = LABEL_WIDTH + 60 * CELL_WIDTH
    height = hours * CELL_HEIGHT + 16
    parts: list[str] = []
    for minute in range(0, 60, 15):
        parts.append(f'<text class="axis" x="{LABEL_WIDTH + minute * CELL_WIDTH}" y="11">:{minute:02d}</text>')
    for hour in range(hours):
        y = 16 + hour * CELL_HEIGHT
        label = (start + timedelta(hours=hour)).astimezone(UTC)
        parts.append(f'<text class="axis" x="0" y="{y + CELL_HEIGHT - 3}">{label:%H}:00</text>')
        for minute in range(60):
            index = hour * 60 + minute
            if index >= len(per_minute):
                break
            count = per_minute[index]
            moment = (start + timedelta(minutes=index)).astimezone(UTC)
            title = escape(f"{moment:%Y-%m-%d %H:%M} UTC: {count} occurrence" + ("" if count == 1 else "s"))
            cell = (
                f'<rect class="heat h{heat_level(count, busiest)}" x="{LABEL_WIDTH + minute * CELL_WIDTH}" y="{y}"'
                f' width="{CELL_WIDTH - 1}" height="{CELL_HEIGHT - 1}"><title>{title}</title></rect>'
            )
            if link is not None and count:
                cell = f'<a href="{escape(link(moment))}" aria-label="{title}">{cell}</a>'
            parts.append(cell)
    summary = f"occurrences per minute from {start.astimezone(UTC):%Y-%m-%d %H:%M} UTC, busiest minute {busiest}"
    # Cells that are links make it a group of links, not one image (an image's parts are not focusable).
    role = "img" if link is None else "group"
    return Markup(
        f'<svg class="heatmap" role="{role}" aria-label="{escape(summary)}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


# A schedule's timeline: its recent occurrences along time, with the changes made meanwhile.
TIMELINE_WIDTH = 720
TIMELINE_HEIGHT = 46
SKIP_GLYPHS = {"paused": "‖", "overlap": "≈", "misfire": "↯", "expired": "∅"}


@dataclass(frozen=True)
class TimelineRun:
    scheduled_at: datetime
    state: str
    skip_reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class TimelineMark:
    at: datetime
    action: str
    label: str


def timeline(runs: Sequence[TimelineRun], marks: Sequence[TimelineMark], end: datetime) -> Markup:
    """Occurrences from the oldest slot shown to `end` (now): a dot at each slot, a line from
    slot to start (lateness), a bar from start to finish coloured by outcome, a glyph for a
    skipped one (its reason in the title), and a line for each change (pause, edit, ...)."""
    if not runs:
        return Markup("")
    start = min(run.scheduled_at for run in runs)
    last = max([end, *(run.finished_at or run.scheduled_at for run in runs)])
    span = max((last - start).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        return round(6 + (moment - start).total_seconds() / span * (TIMELINE_WIDTH - 12), 1)

    parts = [f'<rect class="track" x="0" y="{TIMELINE_HEIGHT - 10}" width="{TIMELINE_WIDTH}" height="1"></rect>']
    for mark in marks:
        if start <= mark.at <= last:
            parts.append(
                f'<line class="mark a-{escape(mark.action)}" x1="{x(mark.at)}" x2="{x(mark.at)}" y1="0" y2="{TIMELINE_HEIGHT}">'
                f"<title>{escape(mark.label)}</title></line>"
            )
    for run in runs:
        slot = x(run.scheduled_at)
        state = escape(run.state)
        label = f"{run.scheduled_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {run.state}"
        if run.skip_reason:
            label += f" ({run.skip_reason})"
            glyph = SKIP_GLYPHS.get(run.skip_reason, "×")
            parts.append(
                f'<text class="glyph r-{escape(run.skip_reason)}" x="{slot}" y="{TIMELINE_HEIGHT - 14}">{glyph}'
                f"<title>{escape(label)}</title></text>"
            )
            continue
        parts.append(f"<g><title>{escape(label)}</title>")
        if run.started_at is not None:
            begin = x(run.started_at)
            parts.append(f'<line class="lag" x1="{slot}" x2="{begin}" y1="20" y2="20"></line>')
            finish = x(run.finished_at) if run.finished_at is not None else x(last)
            parts.append(
                f'<rect class="bar s-{state}" x="{begin}" y="14" width="{max(2.0, round(finish - begin, 1))}" height="12"></rect>'
            )
        parts.append(f'<circle class="slot s-{state}" cx="{slot}" cy="{TIMELINE_HEIGHT - 10}" r="2.5"></circle></g>')
    summary = f"{len(runs)} occurrences from {start.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {len(marks)} changes"
    return Markup(
        f'<svg class="timeline" role="img" aria-label="{escape(summary)}" width="{TIMELINE_WIDTH}" height="{TIMELINE_HEIGHT}"'
        f' viewBox="0 0 {TIMELINE_WIDTH} {TIMELINE_HEIGHT}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )
