"""The sparkline: the newest occurrences right-aligned, one bar each, coloured by class, escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from erp.console.sparkline import HEIGHT, SHORT_BAR, ExampleHistory, sparkline

START = datetime(2030, 1, 1, tzinfo=UTC)


def marks(*states: str) -> list[tuple[datetime, str, str | None]]:
    return [(START + timedelta(minutes=index), state, None) for index, state in enumerate(states)]


def bars(svg: str) -> list[tuple[str, int, int]]:
    return [
        (classes, int(x), int(height))
        for classes, x, height in re.findall(
            r'<rect class="(bar[^"]*)" x="(\d+)" y="\d+" width="\d" height="(\d+)"', svg
        )
    ]


def test_the_newest_occurrence_is_at_the_right_edge_and_skipped_ones_are_short():
    history = [*marks("succeeded", "failed"), (START + timedelta(minutes=5), "skipped", "paused")]
    svg = str(sparkline(ExampleHistory.of(reversed(history)), slots=4))
    assert bars(svg) == [
        ("bar s-succeeded", 4, HEIGHT),
        ("bar s-failed", 8, HEIGHT),
        ("bar s-skipped r-paused", 12, SHORT_BAR),
    ]
    assert 'aria-label="last 3 occurrences: 1 failed, 1 skipped, 1 succeeded"' in svg
    assert "<title>2030-01-01 00:05:00 UTC: skipped (paused)</title>" in svg


def test_only_the_last_slots_are_drawn():
    svg = str(sparkline(ExampleHistory.of(marks(*["succeeded"] * 70))))
    assert len(bars(svg)) == 60
    assert "00:09:00" not in svg and "00:10:00" in svg and "01:09:00" in svg


def test_no_history_is_an_empty_track():
    svg = str(sparkline(ExampleHistory.of([])))
    assert bars(svg) == [] and 'aria-label="last 0 occurrences: none yet"' in svg


def test_values_are_escaped():
    svg = str(sparkline(ExampleHistory.of([(START, 'x"><script>', "<b>")])))
    assert "<script>" not in svg and "<b>" not in svg
    svg = str(sparkline(ExampleHistory(["<i>"], ["succeeded"], [None])))
    assert "<i>" not in svg and "&lt;i&gt;" in svg
    svg = str(sparkline(ExampleHistory(["a\x1f<i>", "b"], ["succeeded", "failed"], [None, None])))
    assert "<title>a\x1f&lt;i&gt; UTC: succeeded</title>" in svg and "<title>b UTC: failed</title>" in svg
