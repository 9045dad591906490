"""When the demo camera fires: the place, irregular frame times, and the real sun path per frame.

Frame times are stepped in UTC (so a daylight-saving change never makes a gap or a pile-up) and
named in the camera's local wall-clock time, as a cheap camera does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import astral
import astral.sun
import numpy as np

DEFAULT_START = date(2024, 4, 2)


@dataclass(frozen=True)
class DemoPlace:
    """Where the demo garden is: the place every sun position and weather row is computed for."""

    name: str
    lat: float
    lon: float
    timezone: str
    elevation_m: float

    @property
    def observer(self) -> astral.Observer:
        return astral.Observer(latitude=self.lat, longitude=self.lon, elevation=self.elevation_m)

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


DEMO_PLACE = DemoPlace(
    name="a back garden in Reading, UK",
    lat=51.454,
    lon=-0.978,
    timezone="Europe/London",
    elevation_m=60.0,
)


@dataclass(frozen=True)
class FrameClock:
    """One frame's moment: UTC instant, camera wall-clock time, and where the sun is."""

    index: int
    utc: datetime  # aware, UTC
    local: datetime  # naive camera wall clock
    sun_elevation: float  # degrees above the horizon (with refraction)
    sun_azimuth: float  # degrees clockwise from north

    @property
    def rel_path(self) -> str:
        """Path under frames/: YYYY/MM/DD/garden_YYYYMMDD_HHMMSS.jpg (local time)."""
        t = self.local
        return f"{t:%Y/%m/%d}/garden_{t:%Y%m%d_%H%M%S}.jpg"


def sun_position(place: DemoPlace, when: datetime) -> tuple[float, float]:
    """(elevation, azimuth) in degrees for an aware datetime."""
    observer = place.observer
    return (float(astral.sun.elevation(observer, when)), float(astral.sun.azimuth(observer, when)))


def frame_clocks(
    n_frames: int,
    rng: np.random.Generator,
    place: DemoPlace = DEMO_PLACE,
    start: date | None = None,
    interval_minutes: tuple[float, float] = (10, 15),
) -> list[FrameClock]:
    """`n_frames` moments from local midnight of `start`, irregular intervals within the bounds."""
    lo, hi = interval_minutes
    if not 0 < lo <= hi:
        raise ValueError(f"interval_minutes must be 0 < low <= high, got {interval_minutes}")
    tz = place.tzinfo
    first = datetime.combine(start or DEFAULT_START, time(0, 0), tzinfo=tz).astimezone(timezone.utc)
    first += timedelta(seconds=int(rng.integers(0, int(lo * 60))))
    steps = rng.integers(int(lo * 60), int(hi * 60) + 1, size=max(0, n_frames - 1))
    offsets = np.concatenate([[0], np.cumsum(steps)])
    clocks: list[FrameClock] = []
    seen: set[datetime] = set()
    for index, seconds in enumerate(offsets):
        utc = first + timedelta(seconds=int(seconds))
        local = utc.astimezone(tz).replace(tzinfo=None)
        while local in seen:  # the repeated hour when clocks go back: keep file names unique
            utc += timedelta(seconds=1)
            local = utc.astimezone(tz).replace(tzinfo=None)
        seen.add(local)
        elevation, azimuth = sun_position(place, utc)
        clocks.append(FrameClock(index, utc, local, elevation, azimuth))
    return clocks
