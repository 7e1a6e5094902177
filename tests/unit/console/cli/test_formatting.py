"""The command line's pure parts: the forecast's heatmap, and reading options into the API's body."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from erp.console.cli import common, formatting, schedules


def test_a_shade_is_the_quarter_of_the_busiest_minute_it_reaches():
    assert [formatting.shade(count, 8) for count in (0, 1, 2, 3, 4, 6, 8)] == ["·", "░", "░", "▒", "▒", "▓", "█"]
    assert formatting.shade(5, 0) == "·"


def test_the_heatmap_has_a_row_per_hour_and_a_column_per_minute():
    start = datetime(2030, 1, 1, 22, 0, tzinfo=UTC)
    per_minute = [0] * 180
    per_minute[5] = 4  # 22:05
    per_minute[61] = 2  # 23:01
    per_minute[179] = 1  # 00:59 the next day
    rows = formatting.heatmap_rows(start, per_minute)
    assert [label for label, _ in rows] == ["01-01 22 h", "      23 h", "01-02 00 h"]  # a new day shows its date
    assert all(len(cells) == 60 for _, cells in rows)
    assert rows[0][1][5] == "█" and rows[1][1][1] == "▒" and rows[2][1][59] == "░"
    assert rows[0][1].count("·") == 59


def test_a_window_that_starts_inside_an_hour_leaves_its_first_minutes_blank():
    rows = formatting.heatmap_rows(datetime(2030, 1, 1, 9, 45, tzinfo=UTC), [1] * 30)
    assert rows[0] == ("01-01 09 h", " " * 45 + "█" * 15)
    assert rows[1] == ("      10 h", "█" * 15 + " " * 45)


def test_the_legend_says_what_the_shades_are():
    assert formatting.legend(0) == "· nothing due"
    assert formatting.legend(12) == "· none  ░ ≤25%  ▒ ≤50%  ▓ ≤75%  █ ≤100% of the busiest minute (12)"
    text = formatting.heatmap_text(datetime(2030, 1, 1, tzinfo=UTC), [0] * 60)
    assert text.splitlines()[0].strip().startswith("0         10")


def test_a_crontab_option_becomes_the_apis_inline_schedule():
    assert schedules._schedule_body(None, "seconds", "30 2 * * mon-fri", "Europe/Berlin") == {
        "kind": "crontab",
        "minute": "30",
        "hour": "2",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "mon-fri",
        "timezone": "Europe/Berlin",
    }
    assert schedules._schedule_body(5, "minutes", None, None) == {"kind": "interval", "every": 5, "period": "minutes"}
    assert schedules._schedule_body(None, "seconds", None, None) is None


@pytest.mark.parametrize(
    ("every", "crontab", "timezone", "message"),
    [
        (5, "* * * * *", None, "not both"),
        (5, None, "UTC", "only a crontab schedule has a zone"),
        (None, None, "UTC", "--timezone needs --crontab"),
        (None, "0 2", None, "has 2 fields; give five"),
    ],
)
def test_contradicting_schedule_options_are_usage_errors(capsys, every, crontab, timezone, message):
    with pytest.raises(typer.Exit) as stopped:
        schedules._schedule_body(every, "seconds", crontab, timezone)
    assert stopped.value.exit_code == common.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_set_reads_json_and_keeps_plain_words():
    assert schedules._set_fields(["jitter_seconds=30", 'kwargs={"a": 1}', "queue=reports", "one_off=true"]) == {
        "jitter_seconds": 30,
        "kwargs": {"a": 1},
        "queue": "reports",
        "one_off": True,
    }
    with pytest.raises(typer.Exit):
        schedules._set_fields(["no-equals-sign"])


def test_times_without_an_offset_are_utc_and_nonsense_is_refused(capsys):
    assert common.parse_time("2030-01-01T09:00", "--at") == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert common.parse_time("2030-01-01T09:00:00Z", "--at").tzinfo is not None
    with pytest.raises(typer.Exit):
        common.parse_time("tomorrow", "--at")
    assert "--at: 'tomorrow' is not a time" in capsys.readouterr().err


def test_one_of_refuses_a_value_outside_its_list():
    check = common.one_of(("a", "b"))
    assert check(["a", "b"]) == ["a", "b"] and check(None) is None
    with pytest.raises(typer.BadParameter, match="'c' is not one of: a, b"):
        check("c")
