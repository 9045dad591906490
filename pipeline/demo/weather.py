"""The demo's hourly weather: a seeded sequence of clear, cloudy, rain, fog (and snow) spells.

Each hour row describes the hour that starts at its time (UTC), which is the row a frame gets
from the store's ASOF join (latest observation at or before the frame). Frames are rendered from
the row of their hour, so the CSV matches what the frames show:

| condition | weather_code (WMO) | cloud_cover (%) | precipitation (mm) |
|---|---|---|---|
| clear  | 0 (< 10 % cloud) or 1 | 0-25   | 0 |
| cloudy | 2 (< 85 % cloud) or 3 | 60-100 | 0 |
| rain   | 61 (< 1.5 mm) or 63   | 88-100 | 0.2-3.5 |
| fog    | 45                    | 90-100 | 0 |
| snow   | 71 (< 0.5 mm) or 73   | 100    | 0.1-1.0 (rain below 0.5 °C) |

The CSV is written in Open-Meteo's CSV export layout (location block, blank line, hourly table,
GMT times) so the ordinary weather importer reads it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from pipeline.demo.timeline import DemoPlace, sun_position

CONDITIONS = ("clear", "cloudy", "rain", "fog", "snow")
CSV_COLUMNS = [
    "time",
    "temperature_2m (°C)",
    "precipitation (mm)",
    "weather_code (wmo code)",
    "cloud_cover (%)",
    "wind_speed_10m (km/h)",
]

_NEXT = {  # Markov chain between spells
    "clear": {"cloudy": 0.6, "rain": 0.15, "fog": 0.25},
    "cloudy": {"clear": 0.5, "rain": 0.4, "fog": 0.1},
    "rain": {"cloudy": 0.7, "clear": 0.3},
    "fog": {"clear": 0.6, "cloudy": 0.4},
    "snow": {"cloudy": 1.0},
}
_HOURS = {"clear": (3, 10), "cloudy": (2, 8), "rain": (1, 4), "fog": (3, 6), "snow": (1, 2)}
_CLIMATE = [
    (8, 2),
    (9, 2),
    (12, 3),
    (15, 5),
    (18, 8),
    (21, 11),
    (23, 13),
    (23, 13),
    (20, 11),
    (16, 8),
    (11, 4),
    (8, 2),
]  # mean daily max/min °C per month, southern England
_WIND = {"clear": (4, 14), "cloudy": (8, 24), "rain": (14, 34), "fog": (0, 5), "snow": (6, 18)}


@dataclass
class WeatherTimeline:
    """Hourly rows from the hour of the first frame to the hour after the last."""

    hours: list  # aware UTC datetimes on the hour
    local_hour: np.ndarray
    sun_elevation: np.ndarray
    condition: list
    cloud_cover: np.ndarray
    precipitation: np.ndarray
    weather_code: np.ndarray
    temperature: np.ndarray
    wind_kmh: np.ndarray

    def index_of(self, utc: datetime) -> int:
        """Row of the hour containing `utc` (the row an ASOF join gives the frame)."""
        return int((utc - self.hours[0]) // timedelta(hours=1))

    def wetness(self, index: int) -> float:
        """1 while it rains, drying over the following hours."""
        for back in range(0, 6):
            i = index - back
            if i < 0:
                break
            if self.condition[i] in ("rain", "snow"):
                return float(0.55**back)
        return 0.0

    def snow_cover(self, index: int) -> float:
        depth = 0.0
        for i in range(index + 1):
            if self.condition[i] == "snow":
                depth = min(1.0, depth + 0.35)
            elif self.temperature[i] > 2.0:
                depth = max(0.0, depth - 0.15)
        return depth

    def force(self, indices, condition: str, rng: np.random.Generator) -> None:
        """Make the given hours `condition` (used to place a dense-fog event or a rain spell)."""
        base = rng.uniform(*_WIND[condition])
        for i in indices:
            self.condition[i] = condition
            self.wind_kmh[i] = round(float(max(0.0, base + rng.normal(0, 1.5))), 1)
            self._values(i, rng)

    def _values(self, i: int, rng: np.random.Generator) -> None:
        cond = self.condition[i]
        precip, cover = 0.0, 0.0
        if cond == "clear":
            cover = rng.uniform(0, 25)
            code = 0 if cover < 10 else 1
        elif cond == "cloudy":
            cover = rng.uniform(60, 100)
            code = 2 if cover < 85 else 3
        elif cond == "rain":
            cover = rng.uniform(88, 100)
            precip = round(float(rng.uniform(0.2, 3.5)), 1)
            code = 61 if precip < 1.5 else 63
        elif cond == "fog":
            cover = rng.uniform(90, 100)
            code = 45
        else:  # snow
            cover = 100.0
            precip = round(float(rng.uniform(0.1, 1.0)), 1)
            code = 71 if precip < 0.5 else 73
        self.cloud_cover[i] = round(float(cover))
        self.precipitation[i] = precip
        self.weather_code[i] = code

    def write_csv(self, path: Path, place: DemoPlace) -> None:
        """Open-Meteo's CSV export layout, times in GMT."""
        with open(path, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(
                [
                    "latitude",
                    "longitude",
                    "elevation",
                    "utc_offset_seconds",
                    "timezone",
                    "timezone_abbreviation",
                ]
            )
            out.writerow(
                [f"{place.lat:g}", f"{place.lon:g}", f"{place.elevation_m:.1f}", 0, "GMT", "GMT"]
            )
            out.writerow([])
            out.writerow(CSV_COLUMNS)
            for i, hour in enumerate(self.hours):
                out.writerow(
                    [
                        hour.strftime("%Y-%m-%dT%H:%M"),
                        f"{self.temperature[i]:.1f}",
                        f"{self.precipitation[i]:.2f}",
                        int(self.weather_code[i]),
                        int(self.cloud_cover[i]),
                        f"{self.wind_kmh[i]:.1f}",
                    ]
                )


def generate_weather(
    first: datetime, last: datetime, place: DemoPlace, rng: np.random.Generator
) -> WeatherTimeline:
    """Hourly weather covering [first, last] (aware UTC datetimes), seeded by `rng`."""
    start = first.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    end = last.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    n = int((end - start) // timedelta(hours=1)) + 2
    hours = [start + timedelta(hours=i) for i in range(n)]
    tz = place.tzinfo
    local = [h.astimezone(tz) for h in hours]
    local_hour = np.array([t.hour + t.minute / 60 for t in local], np.float32)
    elevation = np.array([sun_position(place, h)[0] for h in hours], np.float32)

    condition: list[str] = []
    state = "clear" if rng.random() < 0.5 else "cloudy"
    while len(condition) < n:
        i = len(condition)
        if state == "fog":
            # Fog forms in the small hours and burns off by mid morning.
            hour = local_hour[i]
            length = int(max(2, (9.5 + rng.uniform(0, 1) - hour) % 24)) if hour < 9 else 0
            length = min(length, 8)
        else:
            length = int(rng.integers(_HOURS[state][0], _HOURS[state][1] + 1))
        condition.extend([state] * length)
        state = _next_state(state, local_hour[min(len(condition), n - 1)], rng)
    condition = condition[:n]

    wind = np.zeros(n, np.float32)
    i = 0
    while i < n:
        j = i
        while j < n and condition[j] == condition[i]:
            j += 1
        base = rng.uniform(*_WIND[condition[i]])
        wind[i:j] = np.maximum(0.0, base + rng.normal(0, 2.0, j - i))
        i = j
    timeline = WeatherTimeline(
        hours,
        local_hour,
        elevation,
        condition,
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, np.int32),
        np.zeros(n, np.float32),
        np.round(wind, 1),
    )
    _ensure_variety(timeline, rng)
    _temperatures(timeline, local, rng)
    for i in range(n):
        if timeline.condition[i] == "rain" and timeline.temperature[i] < 0.5:
            timeline.condition[i] = "snow"
        timeline._values(i, rng)
    return timeline


def _next_state(state: str, local_hour: float, rng: np.random.Generator) -> str:
    options = dict(_NEXT[state])
    if not (1 <= local_hour < 7):
        options.pop("fog", None)  # fog only forms overnight
    names = list(options)
    weights = np.array([options[k] for k in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _ensure_variety(t: WeatherTimeline, rng: np.random.Generator) -> None:
    """Every render long enough gets a daylight rain spell and a foggy morning."""
    n = len(t.hours)
    day = [i for i in range(n) if t.sun_elevation[i] > 8]
    if "rain" not in t.condition and len(day) >= 4:
        start = day[int(rng.integers(0, len(day) - 2))]
        t.force([i for i in range(start, min(n, start + 2))], "rain", rng)
    if "fog" not in t.condition:
        mornings = [i for i in range(n) if 4 <= t.local_hour[i] < 5]
        if mornings:
            first = mornings[0]
            last = min(n, first + 5)
            t.force(range(first, last), "fog", rng)


def _temperatures(t: WeatherTimeline, local: list[datetime], rng: np.random.Generator) -> None:
    days = sorted({x.date() for x in local})
    tmax = {d: _CLIMATE[d.month - 1][0] + rng.uniform(-3.0, 2.0) for d in days}
    tmin = {d: _CLIMATE[d.month - 1][1] + rng.uniform(-3.0, 2.0) for d in days}
    offsets = {"clear": 0.0, "cloudy": -0.5, "rain": -2.0, "fog": -1.0, "snow": -3.0}
    for i, when in enumerate(local):
        h = when.hour + when.minute / 60
        d = when.date()
        if 6 <= h <= 15:
            frac = 0.5 - 0.5 * np.cos(np.pi * (h - 6) / 9)
        elif h > 15:
            frac = 0.5 + 0.5 * np.cos(np.pi * (h - 15) / 15)
        else:
            frac = 0.5 + 0.5 * np.cos(np.pi * (h + 9) / 15)
        value = tmin[d] + (tmax[d] - tmin[d]) * frac + offsets[t.condition[i]]
        t.temperature[i] = round(float(value + rng.normal(0, 0.3)), 1)
