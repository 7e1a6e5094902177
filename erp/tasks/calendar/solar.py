"""Solar events: when does the sun next cross an event's horizon at a place? (pure functions)

Used by erp.tasks.calendar.schedules for solar schedules. The events mean what they mean in Celery's
solar schedule, but their table is kept here (see `_SOLAR`), and the search is by the sun's
altitude rather than by ephem's rising and setting functions (see `next_event`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import ephem

from erp.tasks.calendar.kinds import SOLAR_EVENTS, SolarEvent


@dataclass(frozen=True)
class _SolarEvent:
    """When a solar event happens: the sun crosses `horizon_degrees`, rising or setting.

    `use_center`: the sun's centre crosses the horizon (twilights); otherwise its upper limb
    (sunrise and sunset). A transit (solar noon) ignores the horizon.
    """

    horizon_degrees: float
    method: str  # "rising", "setting" or "transit"
    use_center: bool


# The events and their meaning as in Celery's solar schedule, kept here rather than read from
# Celery's private tables: Celery 5.3 has 18 instead of -18 for dusk_astronomical (fixed in
# celery#10101), which fires it in the afternoon. -0:34 for sunrise and sunset is the usual
# allowance for refraction at the horizon, so the computation itself uses no atmosphere.
_SOLAR: dict[SolarEvent, _SolarEvent] = {
    "dawn_astronomical": _SolarEvent(-18.0, "rising", True),
    "dawn_nautical": _SolarEvent(-12.0, "rising", True),
    "dawn_civil": _SolarEvent(-6.0, "rising", True),
    "sunrise": _SolarEvent(-34 / 60, "rising", False),
    "solar_noon": _SolarEvent(0.0, "transit", False),
    "sunset": _SolarEvent(-34 / 60, "setting", False),
    "dusk_civil": _SolarEvent(-6.0, "setting", True),
    "dusk_nautical": _SolarEvent(-12.0, "setting", True),
    "dusk_astronomical": _SolarEvent(-18.0, "setting", True),
}
assert tuple(_SOLAR) == SOLAR_EVENTS, "every solar event of the vocabulary has its meaning here"

# At any latitude the sun's altitude swings from below -18 to above 0 degrees within a year (at
# the poles it follows the declination, -23.4 to +23.4), so every event in the table happens at
# least once a year: two years of search always finds it.
_SOLAR_HORIZON_DAYS = 2 * 366
# How fast the sun's altitude can change, in radians per day, at a latitude: the hour angle
# turns at most 0.2507 degrees a minute and moves the altitude by at most cos(latitude) times
# that; the declination adds at most 0.0003 degrees a minute. 10% on top for what is left out
# (parallax, the changing semi-diameter, rounding).
_SUN_HOUR_RATE = math.radians(0.2507 * 1440)
_SUN_DECLINATION_RATE = math.radians(0.0003 * 1440)
# Where the altitude is this close to the horizon, step by this much: a sun that rises and sets
# again within it (a graze lasting seconds) is not an event anyone schedules by.
_SOLAR_MIN_STEP_DAYS = 30 / 86400
_SOLAR_PRECISION_DAYS = 0.5 / 86400


def next_event(event_name: str, latitude: float, longitude: float, after: datetime) -> datetime | None:
    """The first time strictly after `after` that the sun crosses the event's horizon.

    ephem's next_rising and next_setting raise AlwaysUpError or NeverUpError when there is no
    event on the day they look at, and retrying a day later can step over the first event after
    a polar night, or the last before one. So the search is our own: sample the sun's altitude
    with steps short enough that it cannot cross the horizon between two samples (the
    distance to the horizon divided by the fastest the altitude can change), then bisect the
    first crossing. Far from the horizon the steps are long: a polar night is crossed in a few
    dozen samples, and a near-pole event months away in well under a second.
    """
    event = _SOLAR[cast(SolarEvent, event_name)]  # erp.tasks.calendar.schedules.validate refuses other names
    observer = ephem.Observer()
    observer.lat, observer.lon = math.radians(latitude), math.radians(longitude)
    observer.elevation = 0
    observer.pressure = 0  # the horizons already allow for refraction
    sun = ephem.Sun()
    start = ephem.Date(after.astimezone(UTC).replace(tzinfo=None))
    last = _EPHEM_LAST - 1  # a result must still be a datetime
    if event.method == "transit":
        # Transits happen every day at every latitude; ephem finds them without failing.
        moment = float(start)
        while moment < last:
            observer.date = moment
            found = float(observer.next_transit(sun))
            if found > start:
                return _from_ephem(found)
            moment = found + _SOLAR_PRECISION_DAYS
        return None
    horizon = math.radians(event.horizon_degrees)
    # Looking for the sign of `height` to go from below 0 to 0 or above.
    sign = 1.0 if event.method == "rising" else -1.0

    def height(moment: float) -> float:
        observer.date = moment
        sun.compute(observer)
        altitude = float(sun.alt) if event.use_center else float(sun.alt) + float(sun.radius)
        return sign * (altitude - horizon)

    max_rate = 1.1 * (_SUN_HOUR_RATE * math.cos(math.radians(latitude)) + _SUN_DECLINATION_RATE)
    low = float(start)
    low_height = height(low)
    end = min(low + _SOLAR_HORIZON_DAYS, last)
    while low < end:
        high = low + max(abs(low_height) / max_rate, _SOLAR_MIN_STEP_DAYS)
        high_height = height(high)
        if low_height < 0 <= high_height:
            while high - low > _SOLAR_PRECISION_DAYS:
                middle = (low + high) / 2
                if height(middle) < 0:
                    low = middle
                else:
                    high = middle
            return _from_ephem(high)
        low, low_height = high, high_height
    return None


# ephem's date for 9999-12-31 00:00 UTC: results stay inside datetime's range.
_EPHEM_LAST = float(ephem.Date(datetime(9999, 12, 31)))


def _from_ephem(moment: float) -> datetime:
    """An ephem date as an aware UTC datetime, rounded up to the whole second.

    Rounding up keeps the result at or past the crossing, so asking for the next event after it
    cannot find the same crossing again.
    """
    exact: datetime = ephem.Date(moment).datetime().replace(tzinfo=UTC)
    whole = exact.replace(microsecond=0)
    return whole if whole == exact else whole + timedelta(seconds=1)
