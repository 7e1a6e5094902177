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
from collections.abc import Iterable, Sequence
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


class History(Protocol):
    """A schedule's latest occurrences, newest first, in three parallel sequences (the run
    ledger's erp.tasks.api.last_runs.RecentHistory): each one's slot in UTC as text, state and
    skip reason."""

    @property
    def slots_utc(self) -> Sequence[str]: ...

    @property
    def states(self) -> Sequence[str]: ...

    @property
    def skip_reasons(self) -> Sequence[str | None]: ...


@dataclass(frozen=True)
class ExampleHistory:
    """A history made by hand (tests, examples)."""

    slots_utc: Sequence[str]
    states: Sequence[str]
    skip_reasons: Sequence[str | None]

    @classmethod
    def of(cls, marks: Iterable[tuple[datetime, str, str | None]]) -> ExampleHistory:
        """From (slot, state, skip reason) in any order."""
        newest_first = sorted(marks, key=lambda mark: mark[0], reverse=True)
        return cls(
            [f"{slot.astimezone(UTC):%Y-%m-%d %H:%M:%S}" for slot, _, _ in newest_first],
            [state for _, state, _ in newest_first],
            [reason for _, _, reason in newest_first],
        )


@functools.cache
def _bar_parts(state: str, skip_reason: str | None) -> tuple[str, str, str]:
    """A bar's markup before its x, between its x and its slot, and after its slot: a few
    distinct values, made and escaped once each (a page of 50 sparklines draws 3,000 bars)."""
    classes = f"bar s-{state}" + (f" r-{skip_reason}" if skip_reason else "")
    words = f"{state} ({skip_reason})" if skip_reason else state
    height = SHORT_BAR if state in ("skipped", "revoked") else HEIGHT
    head = f'<rect class="{escape(classes)}" x="'
    middle = f'" y="{HEIGHT - height}" width="{BAR_WIDTH}" height="{height}"><title>'
    return head, middle, f" UTC: {escape(words)}</title></rect>"


@functools.cache
def _lefts(slots: int) -> tuple[str, ...]:
    """The x of each of a sparkline's places, as text."""
    return tuple(str(index * (BAR_WIDTH + BAR_GAP)) for index in range(slots))


def sparkline(history: History, slots: int = SPARKLINE_RUNS) -> Markup:
    """An SVG of the newest `slots` occurrences of `history` (newest first), oldest on the left."""
    shown = min(slots, len(history.states))
    width = slots * (BAR_WIDTH + BAR_GAP) - BAR_GAP
    counts = Counter(history.states[:shown])
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "none yet"
    label = f"last {shown} occurrences: {summary}"
    lefts = _lefts(slots)
    # Escaped in one call, not one per bar (a slot holding U+001F itself, never one PostgreSQL
    # wrote, is escaped alone).
    slot_texts = str(escape("\x1f".join(history.slots_utc[:shown]))).split("\x1f")
    if len(slot_texts) != shown:
        slot_texts = [str(escape(slot)) for slot in history.slots_utc[:shown]]
    bars = []
    # Right-aligned: the newest is always at the right edge, the k-th newest k places left of it.
    for index in range(shown):
        head, middle, tail = _bar_parts(history.states[index], history.skip_reasons[index])
        bars.append(f"{head}{lefts[slots - 1 - index]}{middle}{slot_texts[index]}{tail}")
    bars.reverse()
    return Markup(
        f'<svg class="sparkline" role="img" aria-label="{escape(label)}" width="{width}" height="{HEIGHT}"'
        f' viewBox="0 0 {width} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="track" x="0" y="{HEIGHT - 1}" width="{width}" height="1"></rect>{"".join(bars)}</svg>'
    )
