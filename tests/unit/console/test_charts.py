"""The overview's activity chart: stacked bars scaled to the busiest bucket, labelled, escaped."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from erp.console.charts import HEIGHT, activity_chart, outcome_of

START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def test_bars_are_stacked_by_outcome_and_scaled_to_the_busiest_bucket():
    svg = str(activity_chart([{"succeeded": 3, "failed": 1}, {}, {"succeeded": 2}], START, timedelta(minutes=10)))
    rects = re.findall(r'<rect class="bar (s-[a-z-]+)" x="(\d+)" y="([\d.]+)" width="\d" height="([\d.]+)"', svg)
    assert rects == [
        ("s-succeeded", "0", f"{HEIGHT - 45:.1f}", "45.0"),
        ("s-failed", "0", f"{HEIGHT - 60:.1f}", "15.0"),
        ("s-succeeded", "10", f"{HEIGHT - 30:.1f}", "30.0"),
    ]
    assert "<title>09:00 UTC: 3 succeeded, 1 failed</title>" in svg
    assert "<title>09:20 UTC: 2 succeeded</title>" in svg
    assert 'aria-label="6 occurrences from 2030-01-01 09:00 UTC, busiest 4 per 10 minutes"' in svg


def test_an_empty_day_is_an_empty_track():
    svg = str(activity_chart([{} for _ in range(144)], START, timedelta(minutes=10)))
    assert '<rect class="bar' not in svg and "0 occurrences" in svg


def test_states_that_have_not_finished_are_in_flight():
    assert [outcome_of(state) for state in ("succeeded", "started", "planned", "skipped")] == [
        "succeeded",
        "in flight",
        "in flight",
        "skipped",
    ]


def test_the_heatmap_has_a_cell_per_minute_shaded_against_the_busiest():
    from erp.console.charts import heat_level, load_heatmap

    per_minute = [0] * 120
    per_minute[0], per_minute[61], per_minute[119] = 10, 1, 5
    svg = str(load_heatmap(per_minute, START))
    assert svg.count('<rect class="heat') == 120
    assert '<rect class="heat h5" x="44" y="16"' in svg  # 09:00, the busiest
    assert "<title>2030-01-01 10:01 UTC: 1 occurrence</title>" in svg
    assert "<title>2030-01-01 10:59 UTC: 5 occurrences</title>" in svg
    assert ">09:00</text>" in svg and ">10:00</text>" in svg
    assert [heat_level(count, 10) for count in (0, 1, 2, 3, 5, 10)] == [0, 1, 1, 2, 3, 5]


def test_the_timeline_draws_slots_runs_skips_and_changes():
    from erp.console.charts import TimelineMark, TimelineRun, timeline

    runs = [
        TimelineRun(START, "succeeded", None, START + timedelta(seconds=30), START + timedelta(minutes=2)),
        TimelineRun(START + timedelta(minutes=5), "skipped", "paused"),
        TimelineRun(
            START + timedelta(minutes=10), "failed", None, START + timedelta(minutes=10), START + timedelta(minutes=11)
        ),
    ]
    marks = [TimelineMark(START + timedelta(minutes=4), "pause", "pause by ops@example.com: <maintenance>")]
    svg = str(timeline(runs, marks, START + timedelta(minutes=10)))
    assert svg.count('<circle class="slot') == 2 and svg.count('<rect class="bar') == 2
    assert '<text class="glyph r-paused"' in svg and "‖" in svg
    assert '<line class="mark a-pause"' in svg and "&lt;maintenance&gt;" in svg
    assert "<title>2030-01-01 09:05:00 UTC: skipped (paused)</title>" in svg
    assert str(timeline([], marks, START)) == ""
