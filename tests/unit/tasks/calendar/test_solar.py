"""Solar schedules against an independent minute-by-minute computation of the sun's altitude.

The expected events come from sampling the sun every minute with ephem (no atmosphere, as the
horizons allow for refraction) and finding where it crosses each event's horizon: the centre
for the twilights, the upper limb for sunrise and sunset, and the hour angle passing 0 for
solar noon. The code under test searches on its own; both must agree to the minute, from the
equator to 89.9 degrees north and south, around polar nights and midnight suns.
"""

from __future__ import annotations

import itertools
import math
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import ephem
import pytest
from celery.schedules import solar as celery_solar

from erp.tasks.calendar.schedules import SOLAR_EVENTS, SolarSpec, next_run_after

UTC = UTC
MINUTE = timedelta(minutes=1)

# (event, horizon in degrees, rising (+1) or setting (-1), centre rather than upper limb)
EVENTS = [
    ("dawn_astronomical", -18.0, 1, True),
    ("dawn_nautical", -12.0, 1, True),
    ("dawn_civil", -6.0, 1, True),
    ("sunrise", -34 / 60, 1, False),
    ("sunset", -34 / 60, -1, False),
    ("dusk_civil", -6.0, -1, True),
    ("dusk_nautical", -12.0, -1, True),
    ("dusk_astronomical", -18.0, -1, True),
]


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type]


def sampled_events(latitude: float, longitude: float, start: datetime, days: int) -> dict[str, list[datetime]]:
    """Every event in [start, start + days), found by sampling the sun each minute."""
    observer = ephem.Observer()
    observer.lat, observer.lon = math.radians(latitude), math.radians(longitude)
    observer.pressure, observer.elevation = 0, 0
    sun = ephem.Sun()
    samples: list[tuple[datetime, float, float, float]] = []  # time, centre altitude, radius, hour angle
    for index in range(days * 1440 + 1):
        moment = start + index * MINUTE
        observer.date = ephem.Date(moment.replace(tzinfo=None))
        sun.compute(observer)
        samples.append((moment, float(sun.alt), float(sun.radius), float(sun.ha)))
    found: dict[str, list[datetime]] = {name: [] for name in SOLAR_EVENTS}
    for (before, alt0, radius0, ha0), (_, alt1, radius1, ha1) in itertools.pairwise(samples):
        for name, horizon, sign, use_center in EVENTS:
            value0 = sign * (alt0 + (0 if use_center else radius0) - math.radians(horizon))
            value1 = sign * (alt1 + (0 if use_center else radius1) - math.radians(horizon))
            if value0 < 0 <= value1:
                found[name].append(before + MINUTE * (-value0 / (value1 - value0)))
        if ha0 > 1.5 * math.pi and ha1 < 0.5 * math.pi:  # the hour angle wraps through 0: transit
            to_zero = 2 * math.pi - ha0
            found["solar_noon"].append(before + MINUTE * (to_zero / (to_zero + ha1)))
    return found


def chained(spec: SolarSpec, start: datetime, end: datetime) -> list[datetime]:
    moments: list[datetime] = []
    moment = next_run_after(spec, start)
    while moment is not None and moment < end:
        moments.append(moment)
        moment = next_run_after(spec, moment)
    return moments


PLACES = [
    # name, latitude, longitude, first day, days
    ("Quito", -0.18, -78.47, at(2026, 3, 19), 3),
    ("Berlin, equinox", 52.52, 13.405, at(2026, 3, 19), 3),
    ("Sydney, midwinter", -33.87, 151.21, at(2026, 6, 20), 3),
    ("Reykjavik, midsummer", 64.15, -21.94, at(2026, 6, 19), 4),
    ("Arctic circle, midsummer", 66.6, 25.0, at(2026, 6, 17), 8),
    ("Tromso, polar night starts", 69.65, 18.96, at(2026, 11, 22), 8),
    ("Tromso, polar night ends", 69.65, 18.96, at(2026, 1, 12), 8),
    ("Tromso, midnight sun starts", 69.65, 18.96, at(2026, 5, 15), 8),
    ("Tromso, midnight sun ends", 69.65, 18.96, at(2026, 7, 22), 8),
    ("Svalbard, first sunrise", 78.22, 15.65, at(2026, 2, 10), 8),
    ("McMurdo, last sunset", -77.85, 166.67, at(2026, 4, 20), 8),
    ("89.9 N, March", 89.9, 0.0, at(2026, 3, 15), 8),
    ("89.9 N, September", 89.9, 0.0, at(2026, 9, 20), 8),
    ("89.9 S, September", -89.9, 120.0, at(2026, 9, 18), 8),
]


@pytest.mark.parametrize(
    ("latitude", "longitude", "start", "days"), [place[1:] for place in PLACES], ids=[place[0] for place in PLACES]
)
def test_every_event_matches_the_sampled_sun_to_the_minute(
    latitude: float, longitude: float, start: datetime, days: int
) -> None:
    expected = sampled_events(latitude, longitude, start, days)
    end = start + timedelta(days=days)
    compared = 0
    for name in SOLAR_EVENTS:
        actual = chained(SolarSpec(name, latitude, longitude), start, end)
        wanted = expected[name]
        assert len(actual) == len(wanted), (name, actual, wanted)
        for moment, sampled in zip(actual, wanted, strict=False):
            assert abs(moment - sampled) < MINUTE, (name, moment, sampled)
        compared += len(actual)
    assert compared > 0


def test_dusk_astronomical_is_in_the_evening() -> None:
    # Celery 5.3's table says 18 degrees, not -18 (celery#10101): it fired at 16:13.
    moment = next_run_after(SolarSpec("dusk_astronomical", 52.52, 13.405), at(2026, 3, 21))
    assert moment is not None
    local = moment.astimezone(ZoneInfo("Europe/Berlin"))
    assert local.date().isoformat() == "2026-03-21"
    assert abs(local.replace(tzinfo=None) - datetime(2026, 3, 21, 20, 18)) < 2 * MINUTE


def test_the_first_sunrise_after_the_polar_night_is_not_stepped_over() -> None:
    # Svalbard: the sun first clears the horizon at 10:57 UTC on 15 February; retrying a day
    # after ephem's NeverUpError from 11:00 stepped over it to the 16th.
    moment = next_run_after(SolarSpec("sunrise", 78.22, 15.65), at(2026, 2, 10, 11))
    assert moment is not None and moment.date().isoformat() == "2026-02-15"


EDGES = [
    # name, latitude, longitude, from, days to sample: the first events after a polar night or day
    ("Svalbard, end of polar night", 78.22, 15.65, at(2026, 1, 20), 28),
    ("Tromso, end of polar night", 69.65, 18.96, at(2026, 1, 1), 16),
    ("Tromso, start of polar night", 69.65, 18.96, at(2026, 11, 24), 4),
    ("Tromso, end of midnight sun", 69.65, 18.96, at(2026, 7, 12), 16),
    ("McMurdo, end of polar day", -77.85, 166.67, at(2026, 2, 8), 16),
]


@pytest.mark.parametrize(
    ("latitude", "longitude", "start", "days"), [edge[1:] for edge in EDGES], ids=[edge[0] for edge in EDGES]
)
def test_the_first_event_after_a_polar_night_or_day_from_any_hour(
    latitude: float, longitude: float, start: datetime, days: int
) -> None:
    # A search that skips a day when the sun does not rise or set steps over the first event
    # whenever it starts later in the day than that event.
    expected = sampled_events(latitude, longitude, start, days)
    for name in SOLAR_EVENTS:
        for hour in range(24):
            after = start + timedelta(hours=hour)
            wanted = next((moment for moment in expected[name] if moment > after), None)
            if wanted is None:
                continue
            moment = next_run_after(SolarSpec(name, latitude, longitude), after)
            assert moment is not None and abs(moment - wanted) < MINUTE, (name, after, moment, wanted)


@pytest.mark.parametrize(
    ("event", "latitude", "after", "month"),
    [
        ("sunrise", 89.99, at(2026, 4, 1), "2027-03"),
        ("sunset", 89.99, at(2026, 1, 1), "2026-09"),
        ("sunrise", -89.99, at(2026, 1, 1), "2026-09"),
        ("dusk_astronomical", -89.9, at(2026, 6, 1), "2027-05"),
        ("dawn_civil", 90.0, at(2026, 3, 10), "2027-03"),
    ],
)
def test_an_event_months_away_is_waited_for(event: str, latitude: float, after: datetime, month: str) -> None:
    began = time.process_time()
    moment = next_run_after(SolarSpec(event, latitude, 15.0), after)
    assert time.process_time() - began < 0.5
    assert moment is not None and moment.strftime("%Y-%m") == month


def test_solar_events_are_celerys() -> None:
    assert set(SOLAR_EVENTS) == set(celery_solar._horizons)


def test_a_solar_run_in_normal_latitudes_takes_milliseconds() -> None:
    spec = SolarSpec("sunset", 48.14, 11.58)
    moment = at(2026, 1, 1)
    began = time.process_time()
    for _ in range(100):
        found = next_run_after(spec, moment)
        assert found is not None
        moment = found
    assert (time.process_time() - began) / 100 < 0.005
