"""The sparkline of a schedule: its last occurrences as coloured bars, drawn on the server as SVG.

Why SVG from the server: the console has no JavaScript build and no chart library to keep
pinned; an inline SVG is a few hundred bytes per row, is styled by the console's stylesheet
(classes, no inline styles: the Content-Security-Policy allows none), and reads without
JavaScript. Each bar says its slot and state in a `<title>`, the whole in an `aria-label`.
Pure: the caller passes the occurrences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from markupsafe import Markup, escape

# Occurrences one sparkline shows.
SPARKLINE_RUNS = 60
BAR_WIDTH = 3
BAR_GAP = 1
HEIGHT = 16
# Occurrences that did not run (skipped, revoked) are drawn shorter, so a glance tells ran from not.
SHORT_BAR = 8


class Occurrence(Protocol):
    """What a sparkline needs of one occurrence (a ledger row, erp.tasks.api.last_runs.RecentRun)."""

    @property
    def scheduled_at(self) -> datetime: ...

    @property
    def state(self) -> str: ...

    @property
    def skip_reason(self) -> str | None: ...


@dataclass(frozen=True)
class RunMark:
    """An occurrence made by hand (tests, examples)."""

    scheduled_at: datetime
    state: str
    skip_reason: str | None = None


def _label(mark: Occurrence) -> str:
    state = f"{mark.state} ({mark.skip_reason})" if mark.skip_reason else mark.state
    return f"{mark.scheduled_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {state}"


def sparkline(marks: Sequence[Occurrence], slots: int = SPARKLINE_RUNS) -> Markup:
    """An SVG of the newest `slots` occurrences, oldest on the left; `marks` in any order."""
    newest = sorted(marks, key=lambda mark: mark.scheduled_at)[-slots:]
    width = slots * (BAR_WIDTH + BAR_GAP) - BAR_GAP
    counts = Counter(mark.state for mark in newest)
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "none yet"
    label = f"last {len(newest)} occurrences: {summary}"
    offset = slots - len(newest)  # right-aligned: the newest is always at the right edge
    bars = []
    for index, mark in enumerate(newest):
        short = mark.state in ("skipped", "revoked")
        height = SHORT_BAR if short else HEIGHT
        x = (offset + index) * (BAR_WIDTH + BAR_GAP)
        classes = f"bar s-{mark.state}" + (f" r-{mark.skip_reason}" if mark.skip_reason else "")
        bars.append(
            f'<rect class="{escape(classes)}" x="{x}" y="{HEIGHT - height}" width="{BAR_WIDTH}" height="{height}">'
            f"<title>{escape(_label(mark))}</title></rect>"
        )
    return Markup(
        f'<svg class="sparkline" role="img" aria-label="{escape(label)}" width="{width}" height="{HEIGHT}"'
        f' viewBox="0 0 {width} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="track" x="0" y="{HEIGHT - 1}" width="{width}" height="1"></rect>{"".join(bars)}</svg>'
    )
