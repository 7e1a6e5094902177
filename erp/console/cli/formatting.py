"""Pictures for a terminal: the load forecast as a heatmap of hours by minutes (plain text, so it
reads the same in a log, a pipe or `heroku run`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

# A minute with nothing due, then four shades, each up to a quarter of the busiest minute more.
EMPTY = "·"
SHADES = "░▒▓█"
OUTSIDE = " "  # a minute of the row's hour outside the window asked about
MINUTES_HEADER = "".join(f"{minute:<10d}" for minute in range(0, 60, 10)).rstrip()


def shade(count: int, busiest: int) -> str:
    """The cell of a minute: `·` for none, else the quarter of the busiest minute it reaches."""
    if count <= 0 or busiest <= 0:
        return EMPTY
    return SHADES[min(len(SHADES), math.ceil(count / busiest * len(SHADES))) - 1]


def heatmap_rows(start: datetime, per_minute: Sequence[int]) -> list[tuple[str, str]]:
    """One row per hour the window touches: its label (UTC, the date where a day starts) and
    sixty cells, minute 0 first."""
    start = start.astimezone(UTC)
    busiest = max(per_minute, default=0)
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    offset = int((start - first_hour).total_seconds() // 60)
    cells = [OUTSIDE] * offset + [shade(count, busiest) for count in per_minute]
    rows = []
    for index in range(0, len(cells), 60):
        hour = first_hour + timedelta(minutes=index)
        label = hour.strftime("%m-%d %H h") if index == 0 or hour.hour == 0 else hour.strftime("      %H h")
        rows.append((label, "".join(cells[index : index + 60]).ljust(60, OUTSIDE)))
    return rows


def legend(busiest: int) -> str:
    """What the shades mean: quarters of the busiest minute."""
    if busiest <= 0:
        return f"{EMPTY} nothing due"
    quarters = "  ".join(f"{mark} ≤{(step + 1) * 25}%" for step, mark in enumerate(SHADES))
    return f"{EMPTY} none  {quarters} of the busiest minute ({busiest})"


def heatmap_text(start: datetime, per_minute: Sequence[int]) -> str:
    """The whole picture: minutes across, hours down, then the legend."""
    label_width = len("mm-dd HH h")
    lines = [" " * (label_width + 1) + MINUTES_HEADER]
    lines += [f"{label} {cells}" for label, cells in heatmap_rows(start, per_minute)]
    lines.append(legend(max(per_minute, default=0)) + ", occurrences per minute, UTC")
    return "\n".join(lines)
