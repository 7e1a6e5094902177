"""The sparkline of a schedule: its last occurrences as coloured bars, drawn on the server as SVG.

Why SVG from the server: the console has no JavaScript build and no chart library to keep
pinned; an inline SVG is a few hundred bytes per row, is styled by the console's stylesheet
(classes, no inline styles: the Content-Security-Policy allows none), and reads without
JavaScript. Each bar says its slot and state in a `<title>`, the whole in an `aria-label`.
Pure: the caller passes the occurrences.
"""

from __future__ import annotations

import functools
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


@functools.cache
def _bar_parts(state: str, skip_reason: str | None) -> tuple[str, int, str]:
    """A bar's escaped classes, height and state words: a few distinct values, made once each
    (a page of 50 sparklines draws 3,000 bars)."""
    classes = f"bar s-{state}" + (f" r-{skip_reason}" if skip_reason else "")
    words = f"{state} ({skip_reason})" if skip_reason else state
    height = SHORT_BAR if state in ("skipped", "revoked") else HEIGHT
    return str(escape(classes)), height, str(escape(words))


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
        classes, height, words = _bar_parts(mark.state, mark.skip_reason)
        x = (offset + index) * (BAR_WIDTH + BAR_GAP)
        slot = mark.scheduled_at.astimezone(UTC).isoformat(sep=" ", timespec="seconds")[:19]
        bars.append(
            f'<rect class="{classes}" x="{x}" y="{HEIGHT - height}" width="{BAR_WIDTH}" height="{height}">'
            f"<title>{slot} UTC: {words}</title></rect>"
        )
    return Markup(
        f'<svg class="sparkline" role="img" aria-label="{escape(label)}" width="{width}" height="{HEIGHT}"'
        f' viewBox="0 0 {width} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="track" x="0" y="{HEIGHT - 1}" width="{width}" height="1"></rect>{"".join(bars)}</svg>'
    )
