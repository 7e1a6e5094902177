"""The forecast's arithmetic for intervals against counting every firing one by one (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import pytest

from erp.tasks.api.forecast import MINUTE_US, WindowTooLarge, count_interval_firings, minute_window


def brute_force(start_us: int, minutes: int, step: int, phase: int, lower: int, upper: int) -> list[int]:
    counts = [0] * minutes
    moment = phase - ((phase - start_us) // step) * step - step  # a grid slot before the window
    while moment < start_us + minutes * MINUTE_US:
        if lower <= moment < upper and moment >= start_us:
            counts[(moment - start_us) // MINUTE_US] += 1
        moment += step
    return counts


@pytest.mark.parametrize("seed", range(20))
def test_interval_counts_per_minute_match_a_walk_over_every_firing(seed):
    rand = random.Random(seed)
    start_us = 1_900_000_000 * 1_000_000 + rand.randrange(MINUTE_US)
    start_us -= start_us % MINUTE_US
    minutes = rand.randint(1, 60)
    end_us = start_us + minutes * MINUTE_US
    groups = []
    for _ in range(rand.randint(1, 20)):
        step = rand.choice([1_000_000, 7_000_000, 60_000_000, 61_000_000, 3_600_000_000]) * rand.randint(1, 3)
        step += rand.choice([0, 0, 1, 123_457])
        phase = rand.randrange(step)
        lower = rand.choice([start_us, start_us + rand.randrange(end_us - start_us)])
        upper = rand.choice([end_us, lower + rand.randrange(end_us - lower + 1)])
        groups.append((step, phase, lower, upper, rand.randint(1, 5)))
    expected = np.zeros(minutes, dtype=np.int64)
    for step, phase, lower, upper, weight in groups:
        expected += weight * np.array(brute_force(start_us, minutes, step, phase, lower, upper))
    columns = [np.array(column, dtype=np.int64) for column in zip(*groups, strict=True)]
    assert list(count_interval_firings(start_us, minutes, *columns)) == list(expected)


def test_a_microsecond_interval_fires_sixty_million_times_a_minute():
    start_us = 1_900_000_020 * 1_000_000
    one = [np.array([value], dtype=np.int64) for value in (1, 0, start_us, start_us + 2 * MINUTE_US, 2)]
    assert list(count_interval_firings(start_us, 2, *one)) == [120_000_000, 120_000_000]


def test_the_window_is_whole_minutes_and_at_most_a_day():
    first, minutes = minute_window(
        datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC), datetime(2030, 1, 1, 1, 0, 1, tzinfo=UTC)
    )
    assert (first, minutes) == (datetime(2030, 1, 1, tzinfo=UTC), 61)
    assert minute_window(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))[1] == 1440
    with pytest.raises(WindowTooLarge, match="spans 1441 minutes"):
        minute_window(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC), datetime(2030, 1, 2, 0, 0, 1, tzinfo=UTC))
