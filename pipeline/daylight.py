"""Camera time -> UTC across DST changes, sun elevation, and day / twilight / night per frame.

- `to_utc()` turns naive camera wall-clock times into UTC for an IANA zone. In the fall-back
  hour a wall-clock time happens twice: the frame order decides (the first pass is summer time,
  a time at or before one already seen in the hour is the second pass); in the spring-forward
  gap a time does not exist: it is read with the offset from before the gap (02:30 -> 03:30
  summer time, as a camera that has not changed yet). Both are counted.
- `sun_position()` (and `sun_elevation()`) is astral's solar position, vectorised: astral gives
  the sun's declination and equation of time at hourly knots, numpy interpolates them and does
  the geometry and refraction for every frame (750k frames in about a second): the elevation
  and the azimuth (degrees clockwise from north). `sun_declination()` needs no place: the
  declination of each frame's date.
- `classify()`: day above `day_min_elevation`, twilight down to `twilight_min_elevation`, night
  below. The sun stands where the camera is (`--lat/--lon`, daylight_source 'sun'); without a
  location, at its time zone's own place (`zone_place`: the coordinates the tz database gives
  the zone, e.g. Amsterdam for Europe/Amsterdam; daylight_source 'timezone'), which is within
  an hour of the camera's sun in all but the widest zones. A camera's night is not always dark:
  a street under its lamps, or a roof camera that turns its gain up, makes night frames as
  bright as some days (nyctraffic's nights and roofcam's, docs/PERFORMANCE.md), so brightness
  alone called them day. The sun's position is not the camera's day where the camera is lit by
  its own lights (an aquarium, a grow tent): there `daylight_from = brightness` tells day and
  night, as without a time zone, from the mean luma of the frame (daylight_source 'brightness'):
  night under `night_max_luma`, day above `day_min_luma`, twilight between. A camera whose
  scene is dark in full daylight (a dark slope) is lit at a mean luma that setting calls
  twilight, so the camera's own day (`day_luma`, a `DayLuma`) also makes a frame day: above
  `DAY_SHARE` of its bright frames (the `BRIGHT_QUANTILE` of its frames' mean luma, never under
  `night_max_luma`) at an hour of the camera clock when its frames are that bright as a rule
  (their median). The hour keeps a room lit at night, as bright as the room by day, at night.
  Ingest keeps it in the store (kv `day_luma`) and classifies every frame again when the
  archive changes it (`settle_day_luma`).
- `place()` remembers the timezone, lat/lon, clock offset and `daylight_from` in the store
  (`store.kv`), and `recompute()` redoes every frame's times and daylight from the stored place
  (`locate`); `check_same_place()` stops an ingest that would place new frames elsewhere than
  the old.
"""

from __future__ import annotations

import dataclasses
import functools
import zoneinfo
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import store
from pipeline.errors import InputError
from pipeline.settings import MAX_CLOCK_OFFSET_DAYS, Settings
from store import embeddings as embeddings_store
from store import frames as frames_store
from store import kv

PLACE_KEYS = ("timezone", "lat", "lon", "clock_offset_minutes", "daylight_from")
DAY_LUMA_KEY = "day_luma"  # the store's own day without a location (kv; `DayLuma`)
# Without a location, the camera's own day (`DayLuma`): DAY_SHARE of its bright frames (their
# BRIGHT_QUANTILE of mean luma) at the hours its frames are that bright as a rule. On the
# expressway camera (bench/cameras/expressway: a dark slope) clear mornings are at 65-80 and
# its bright frames at ~100, so `day_min_luma`'s 80 alone called 9% of its clear frames
# twilight. At least MIN_BRIGHTNESS_FRAMES frames in all, MIN_HOUR_FRAMES in an hour.
BRIGHT_QUANTILE, DAY_SHARE = 0.9, 0.6
MIN_BRIGHTNESS_FRAMES, MIN_HOUR_FRAMES = 50, 5
_US_PER_MIN = 60_000_000


@dataclass(frozen=True)
class DayLuma:
    """Without a location, how bright this camera's day is: a frame taken at one of `hours` (of
    the camera clock, 0-23) is day above a mean luma of `floor`."""

    floor: float
    hours: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"floor": self.floor, "hours": list(self.hours)}

    @classmethod
    def from_json(cls, value: Any) -> DayLuma | None:
        if not isinstance(value, dict):  # absent
            return None
        return cls(float(value["floor"]), tuple(int(h) for h in value["hours"]))

    def same(self, other: DayLuma | None) -> bool:
        """The same day within a grey level."""
        return (
            other is not None
            and abs(self.floor - other.floor) < 1.0
            and set(self.hours) == set(other.hours)
        )


@dataclass(frozen=True)
class Place:
    """Where and in which clock the camera is (and, without a location, how bright its day is);
    None = unknown."""

    timezone: str | None = None
    lat: float | None = None
    lon: float | None = None
    clock_offset_minutes: float = 0.0
    # how day and night are told (`Settings.daylight_from`); None: by the sun
    daylight_from: str | None = None
    # by brightness, the camera's own day (kv `day_luma`); None: `day_min_luma` alone
    day_luma: DayLuma | None = None

    @property
    def has_location(self) -> bool:
        return self.lat is not None and self.lon is not None

    def sun(self) -> tuple[float, float, str] | None:
        """(lat, lon, daylight_source) of the sun that tells day from night: the camera's
        location ('sun'), else its time zone's own place ('timezone'); None: by brightness
        (asked for, or neither is known)."""
        if self.daylight_from == "brightness":
            return None
        if self.has_location:
            return float(self.lat), float(self.lon), "sun"
        at = zone_place(self.timezone) if self.timezone else None
        return None if at is None else (at.lat, at.lon, "timezone")

    @property
    def by_brightness(self) -> bool:
        """Whether day and night come from each frame's mean luma."""
        return self.sun() is None


@dataclass(frozen=True)
class ZonePlace:
    """The place the tz database gives a time zone (its principal city)."""

    name: str
    lat: float
    lon: float


def zone_place(name: str) -> ZonePlace | None:
    """The coordinates the tz database (the pinned `tzdata` package's zone.tab and zone1970.tab)
    gives the IANA zone `name`, or the zone a link names (US/Eastern, Asia/Calcutta: the same
    rules, byte for byte); None for a zone it places nowhere (UTC, Etc/GMT+5)."""
    places = _zone_places()
    if name in places:
        return places[name]
    try:
        rules = _zone_rules(name)
    except (OSError, ValueError):
        return None
    return next((places[z] for z in places if _zone_rules(z) == rules), None)


@functools.cache
def _zone_rules(name: str) -> bytes:
    return (resources.files("tzdata") / "zoneinfo").joinpath(*name.split("/")).read_bytes()


@functools.cache
def _zone_places() -> dict[str, ZonePlace]:
    places: dict[str, ZonePlace] = {}
    for table in ("zone1970.tab", "zone.tab"):  # zone.tab also places the zones 1970 merged
        text = (resources.files("tzdata") / "zoneinfo" / table).read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split("\t")
            name, (lat, lon) = fields[2], _iso6709(fields[1])
            places.setdefault(name, ZonePlace(name, lat, lon))
    return places


def _iso6709(text: str) -> tuple[float, float]:
    """'+5222+00454' or '+404251-0740023' (±DDMM[SS]±DDDMM[SS]) -> (lat, lon) in degrees."""
    split = max(text.rfind("+"), text.rfind("-"))

    def degrees(part: str, width: int) -> float:
        sign, digits = (-1.0 if part[0] == "-" else 1.0), part[1:]
        whole, minutes, seconds = digits[:width], digits[width : width + 2], digits[width + 2 :]
        return sign * (int(whole) + int(minutes) / 60 + (int(seconds) / 3600 if seconds else 0))

    return degrees(text[:split], 2), degrees(text[split:], 3)


def check_place(settings: Settings) -> None:
    """Cheap validation of the place flags before any work (raises InputError)."""
    if settings.timezone is not None:
        zone(settings.timezone)
    if (settings.lat is None) != (settings.lon is None):
        raise InputError("give both --lat and --lon (or neither)")
    if settings.lat is not None and not -90 <= settings.lat <= 90:
        raise InputError(f"latitude {settings.lat} is outside -90..90")
    if settings.lon is not None and not -180 <= settings.lon <= 180:
        raise InputError(f"longitude {settings.lon} is outside -180..180")


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name`; an `InputError` that says what to give when it is unknown."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise InputError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/London or "
            "America/New_York"
        ) from None


def place(con, settings: Settings) -> Place:
    """Remember the place values given in `settings` in the store; fill the rest from it.

    `clock_offset_minutes` counts as given when it is not 0 (its default); to reset a stored
    offset to 0, `kv.put(con, 'clock_offset_minutes', 0)`.
    """
    check_place(settings)
    for key, value in _given_place(settings).items():
        if value is not None:
            kv.put(con, key, value)
    return stored_place(con)


_PLACE_FLAGS = {
    "timezone": "--timezone",
    "lat": "--lat",
    "lon": "--lon",
    "clock_offset_minutes": "--clock-offset",
    "daylight_from": "--daylight-from",
}


def check_same_place(con, settings: Settings, db: Path) -> None:
    """An InputError when `settings` give a place value that differs from the one the store's
    frames were placed with (an ingest into a store that has frames): the new frames would get
    another clock or another sun than the old ones. `locate` is the way to move every frame."""
    if not embeddings_store.count_frames(con):
        return
    stored = stored_place(con)
    given = _given_place(settings)
    changed = [
        key
        for key, value in given.items()
        if value is not None and not _same(getattr(stored, key), value)
    ]
    if not changed:
        return
    was = ", ".join(f"{key} {_shown(getattr(stored, key), key)}" for key in changed)
    now = " ".join(f"{_PLACE_FLAGS[key]} {given[key]}" for key in changed)
    raise InputError(
        f"the frames in {db} were placed with {was}; this ingest gives {now}, which would put "
        f"the new frames on another clock or under another sun. To move every frame, run "
        f"`python -m pipeline locate --db {db} {now}`; to add frames of the same camera, "
        "leave those flags out (the store remembers its place)"
    )


def _given_place(settings: Settings) -> dict[str, Any]:
    """The place values `settings` give (None: not given; a clock offset of 0 is its default)."""
    return {
        "timezone": settings.timezone,
        "lat": settings.lat,
        "lon": settings.lon,
        "clock_offset_minutes": settings.clock_offset_minutes or None,
        "daylight_from": settings.daylight_from,
    }


def _same(stored: Any, given: Any) -> bool:
    if stored is None:
        return False
    if isinstance(given, str):
        return stored == given
    return abs(float(stored) - float(given)) <= 1e-9


def _shown(value: Any, key: str) -> str:
    if value is None:
        return "none (the clock read as UTC)" if key == "timezone" else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def stored_place(con) -> Place:
    """The place the store remembers (read-only: `serve` reads it so)."""
    stored = {key: kv.get(con, key) for key in PLACE_KEYS}
    offset = float(stored["clock_offset_minutes"] or 0.0)
    if not abs(offset) <= MAX_CLOCK_OFFSET_DAYS * 1440:  # stored by an older version
        raise InputError(
            f"the store's clock offset ({offset:g} minutes) is beyond {MAX_CLOCK_OFFSET_DAYS} "
            "days: set it again with `python -m pipeline locate --db FILE --clock-offset MIN`"
        )
    day = kv.get(con, DAY_LUMA_KEY)
    return Place(
        timezone=stored["timezone"],
        lat=stored["lat"],
        lon=stored["lon"],
        clock_offset_minutes=offset,
        daylight_from=stored["daylight_from"],
        day_luma=DayLuma.from_json(day),
    )


# --- time zones --------------------------------------------------------------------------------


def to_utc(local_naive_datetimes, tz: str | None):
    """Naive wall-clock times -> (utc DatetimeIndex, offsets in minutes, n_ambiguous, n_missing).

    `local_naive_datetimes` is in frame order (it decides the fall-back hour). `tz` None means
    the clock is UTC. NaT stays NaT (offset 0). Offsets are minutes east of UTC, as
    `local - utc`.
    """
    local = pd.DatetimeIndex(local_naive_datetimes)
    if local.tz is not None:
        raise ValueError("to_utc expects naive wall-clock times")
    local = local.as_unit("us")
    n = len(local)
    if tz is None or tz == "UTC":
        return local.tz_localize("UTC"), np.zeros(n, dtype=np.int64), 0, 0
    zone(tz)
    valid = ~local.isna()
    summer = local.tz_localize(tz, ambiguous=np.ones(n, dtype=bool), nonexistent="NaT")
    winter = local.tz_localize(tz, ambiguous=np.zeros(n, dtype=bool), nonexistent="NaT")
    missing = valid & summer.isna()
    ambiguous = valid & ~missing & (summer != winter)
    utc_us = np.asarray(summer.tz_convert("UTC").as_unit("us").asi8, dtype=np.int64).copy()
    if ambiguous.any():
        winter_us = winter.tz_convert("UTC").as_unit("us").asi8
        second_pass = _second_pass(local.asi8, np.flatnonzero(ambiguous))
        utc_us[second_pass] = winter_us[second_pass]
    if missing.any():
        # the offset in force three hours before the gap (a gap never follows another so soon)
        before = (local[missing] - pd.Timedelta(hours=3)).tz_localize(
            tz, ambiguous=np.zeros(int(missing.sum()), dtype=bool), nonexistent="shift_forward"
        )
        offset_before = (
            before.tz_localize(None).as_unit("us").asi8
            - before.tz_convert("UTC").tz_localize(None).as_unit("us").asi8
        )
        utc_us[missing] = local.asi8[missing] - offset_before
    utc_us[~valid] = np.iinfo(np.int64).min
    utc = pd.DatetimeIndex(utc_us.view("datetime64[us]")).tz_localize("UTC")
    offsets = np.where(valid, (local.asi8 - utc_us) // _US_PER_MIN, 0).astype(np.int64)
    return utc, offsets, int(ambiguous.sum()), int(missing.sum())


def _second_pass(local_us: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which ambiguous entries (positions, in frame order) are the second, standard-time pass."""
    chosen = []
    state: dict[int, tuple[set, bool, int | None]] = {}
    for pos in positions:
        value = int(local_us[pos])
        day = value // (86_400 * 1_000_000)
        seen, switched, previous = state.get(day, (set(), False, None))
        if switched or (previous is not None and value < previous):
            switched = True
            chosen.append(pos)
        elif value in seen:
            chosen.append(pos)
        else:
            seen.add(value)
        state[day] = (seen, switched, value)
    return np.asarray(chosen, dtype=np.int64)


def utc_to_local(utc: pd.DatetimeIndex, tz: str | None) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Aware UTC instants -> (naive wall clock in `tz`, offsets in minutes)."""
    utc = pd.DatetimeIndex(utc).tz_convert("UTC").as_unit("us")
    local = utc if tz is None else utc.tz_convert(tz)
    naive = local.tz_localize(None)
    valid = ~utc.isna()
    offsets = np.where(valid, (naive.asi8 - utc.tz_localize(None).asi8) // _US_PER_MIN, 0)
    return naive, offsets.astype(np.int64)


# --- the sun -----------------------------------------------------------------------------------


def sun_elevation(utc, lat: float, lon: float) -> np.ndarray:
    """Sun elevation in degrees (with refraction, as `astral.sun.elevation`) at UTC instants."""
    return sun_position(utc, lat, lon)[0]


def sun_position(utc, lat: float, lon: float) -> tuple[np.ndarray, np.ndarray]:
    """(elevation, azimuth) of the sun in degrees at UTC instants, as `astral.sun.elevation`
    (with refraction) and `astral.sun.azimuth` (clockwise from north) give them; NaN where
    the time is unknown."""
    from astral import sun as astral_sun

    utc = pd.DatetimeIndex(utc)
    if utc.tz is None:
        utc = utc.tz_localize("UTC")
    valid = ~utc.isna()
    elevation_out = np.full(len(utc), np.nan)
    azimuth_out = np.full(len(utc), np.nan)
    if not valid.any():
        return elevation_out, azimuth_out
    # astral truncates to whole seconds
    seconds = (utc[valid].tz_convert("UTC").as_unit("us").asi8 // 1_000_000).astype(np.float64)
    hours = np.floor(seconds / 3600.0)
    knots = np.unique(np.concatenate([hours, hours + 1]))
    knot_jc = _julian_century(knots * 3600.0 / 86400.0)
    decl_knots = np.array([astral_sun.sun_declination(t) for t in knot_jc])
    eqt_knots = np.array([astral_sun.eq_of_time(t) for t in knot_jc])
    pos = np.searchsorted(knots, hours)
    frac = seconds / 3600.0 - hours
    declination = decl_knots[pos] + frac * (decl_knots[pos + 1] - decl_knots[pos])
    eqtime = eqt_knots[pos] + frac * (eqt_knots[pos + 1] - eqt_knots[pos])

    latitude = float(np.clip(lat, -89.8, 89.8))
    minutes_of_day = np.mod(seconds, 86400.0) / 60.0
    true_solar = np.mod(minutes_of_day + eqtime + 4.0 * float(lon), 1440.0)
    hour_angle_deg = true_solar / 4.0 - 180.0
    hour_angle = np.radians(hour_angle_deg)
    lat_r, decl_r = np.radians(latitude), np.radians(declination)
    cos_zenith = np.clip(
        np.cos(lat_r) * np.cos(decl_r) * np.cos(hour_angle) + np.sin(lat_r) * np.sin(decl_r),
        -1.0,
        1.0,
    )
    zenith = np.degrees(np.arccos(cos_zenith))
    elevation = 90.0 - zenith
    elevation_out[valid] = elevation + _refraction(elevation)
    # azimuth as astral computes it: from the zenith, east of the meridian before solar noon
    denominator = np.cos(lat_r) * np.sin(np.radians(zenith))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.clip(
            (np.sin(lat_r) * np.cos(np.radians(zenith)) - np.sin(decl_r)) / denominator, -1.0, 1.0
        )
    azimuth = 180.0 - np.degrees(np.arccos(ratio))
    azimuth = np.where(hour_angle_deg > 0.0, -azimuth, azimuth)
    azimuth = np.where(np.abs(denominator) > 0.001, azimuth, 180.0 if latitude > 0 else 0.0)
    azimuth_out[valid] = np.mod(azimuth, 360.0)
    return elevation_out, azimuth_out


def sun_declination(local) -> np.ndarray:
    """The sun's declination in degrees (astral's, north positive) at noon of each date of
    `local` (camera-clock or UTC datetime64; the date is what counts: it moves by at most 0.4
    degrees a day); NaN where the time is unknown. Needs no place: at one place, the clock
    time and the declination fix where the sun is (up to summer time and the equation of
    time), which is how `pipeline.detectors.own` pools frames without a place."""
    from astral import sun as astral_sun

    local = np.asarray(local, dtype="datetime64[ns]")
    out = np.full(len(local), np.nan)
    known = ~np.isnat(local)
    if not known.any():
        return out
    days = local[known].astype("datetime64[D]")
    unique, back = np.unique(days, return_inverse=True)
    noon_jc = _julian_century(unique.astype(np.int64) + 0.5)
    out[known] = np.array([astral_sun.sun_declination(t) for t in noon_jc])[back]
    return out


def _julian_century(unix_days: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 00:00 UTC as Julian centuries since J2000, astral's time unit."""
    return (unix_days + 2440587.5 - 2451545.0) / 36525.0


def _refraction(elevation: np.ndarray) -> np.ndarray:
    """astral.refraction_at_zenith, vectorised (degrees to add to the elevation)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        te = np.tan(np.radians(elevation))
        high = 58.1 / te - 0.07 / te**3 + 0.000086 / te**5
        low = 1735.0 + elevation * (
            -518.2 + elevation * (103.4 + elevation * (-12.79 + elevation * 0.711))
        )
        below = -20.774 / te
    arcsec = np.select(
        [elevation >= 85.0, elevation > 5.0, elevation > -0.575], [0.0, high, low], default=below
    )
    return arcsec / 3600.0


def _luma(mean_luma) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(mean_luma), errors="coerce"), dtype=np.float64)


def _hours(local_times) -> np.ndarray:
    """Each frame's hour of the camera clock, -1 without a time."""
    hours = pd.DatetimeIndex(pd.to_datetime(pd.Series(local_times))).hour
    return np.nan_to_num(np.asarray(hours, dtype=np.float64), nan=-1).astype(int)


def day_luma(mean_luma, local_times, settings: Settings) -> DayLuma | None:
    """The camera's own day, from every frame of the store (`mean_luma` and camera-clock
    `local_times`): `DAY_SHARE` of its bright frames (the `BRIGHT_QUANTILE` of `mean_luma`), never
    under `night_max_luma`, at the hours whose frames' median mean luma is above it. None where
    it would add nothing to `day_min_luma` (a camera bright by day), or where there are too few
    frames to say (`MIN_BRIGHTNESS_FRAMES`; `MIN_HOUR_FRAMES` in an hour)."""
    luma, hours = _luma(mean_luma), _hours(local_times)
    known = np.isfinite(luma)
    if known.sum() < MIN_BRIGHTNESS_FRAMES:
        return None
    floor = max(
        float(settings.night_max_luma),
        DAY_SHARE * float(np.quantile(luma[known], BRIGHT_QUANTILE)),
    )
    if floor >= settings.day_min_luma:
        return None
    by_hour = pd.Series(luma[known & (hours >= 0)]).groupby(hours[known & (hours >= 0)])
    typical = by_hour.median()[by_hour.size() >= MIN_HOUR_FRAMES]
    lit = tuple(int(h) for h in typical.index[typical.to_numpy() > floor])
    return DayLuma(round(floor, 3), lit) if lit else None


def classify(
    elevation: np.ndarray | None,
    mean_luma,
    settings: Settings,
    day: DayLuma | None = None,
    hours: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """('day' / 'twilight' / 'night' per frame, daylight_source 'sun' or 'brightness');
    without an elevation by brightness: day above `day_min_luma`, or above the camera's own
    `day` floor at one of its hours (each frame's hour of the camera clock in `hours`)."""
    if elevation is not None:
        e = np.asarray(elevation, dtype=np.float64)
        labels = np.select(
            [e > settings.day_min_elevation, e > settings.twilight_min_elevation],
            ["day", "twilight"],
            default="night",
        ).astype(object)
        labels[np.isnan(e)] = None
        return labels, "sun"
    luma = _luma(mean_luma)
    lit = luma > settings.day_min_luma
    if day is not None and hours is not None:
        lit |= (luma > day.floor) & np.isin(hours, day.hours)
    labels = np.select(
        [lit, luma >= settings.night_max_luma],
        ["day", "twilight"],
        default="night",
    ).astype(object)
    labels[np.isnan(luma)] = None
    return labels, "brightness"


# --- per frame -----------------------------------------------------------------------------------


@dataclass
class TimeResult:
    times: pd.DataFrame  # frame_id? + TIME_COLUMNS
    n_ambiguous: int
    n_missing: int


def compute_times(rows: pd.DataFrame, where: Place, settings: Settings) -> TimeResult:
    """Times and daylight for frames in frame order.

    `rows` has taken_at (naive wall clock or NaT), source_utc (aware or NaT), time_source and
    mean_luma. Sources that fix the instant (source_utc) keep it; their wall clock is the
    instant in the camera's zone, except EXIF with an offset, whose wall clock is its own.
    The clock offset is added to taken_at_utc (taken_at stays what the camera said).
    """
    n = len(rows)
    taken_at = pd.DatetimeIndex(pd.to_datetime(rows["taken_at"])).as_unit("us")
    if taken_at.tz is not None:
        taken_at = taken_at.tz_localize(None)
    source_utc = pd.DatetimeIndex(pd.to_datetime(rows["source_utc"], utc=True)).as_unit("us")
    fixed = np.asarray(~source_utc.isna())
    exif_fixed = fixed & (rows["time_source"].to_numpy() == "exif")

    utc, offsets, n_ambiguous, n_missing = to_utc(taken_at.where(~fixed, pd.NaT), where.timezone)
    utc_us = utc.asi8.copy()
    offsets = offsets.copy()
    local_us = taken_at.asi8.copy()
    if fixed.any():
        src_us = source_utc.asi8
        utc_us[fixed] = src_us[fixed]
        zone_local, zone_offsets = utc_to_local(source_utc[fixed], where.timezone)
        wall = np.where(exif_fixed[fixed], taken_at.asi8[fixed], zone_local.asi8)
        local_us[fixed] = wall
        offsets[fixed] = (wall - src_us[fixed]) // _US_PER_MIN
        del zone_offsets
    shift = int(round(where.clock_offset_minutes * _US_PER_MIN))
    nat = np.iinfo(np.int64).min
    corrected = np.where(utc_us == nat, nat, utc_us + shift)
    taken_at_utc = pd.DatetimeIndex(corrected.view("datetime64[us]")).tz_localize("UTC")
    local = pd.DatetimeIndex(local_us.view("datetime64[us]"))
    sun = where.sun()
    elevation = np.full(n, np.nan)  # the sun at the camera: only where its place is known
    if sun is not None:
        lat, lon, source = sun
        at_sun = sun_elevation(taken_at_utc, lat, lon)
        labels, _ = classify(at_sun, None, settings)
        if source == "sun":
            elevation = at_sun
    else:
        labels, source = classify(
            None, rows["mean_luma"].to_numpy(), settings, where.day_luma, _hours(local)
        )
    times = pd.DataFrame(
        {
            "taken_at": local,
            "taken_at_utc": taken_at_utc,
            "utc_offset_min": pd.array(offsets, dtype="Int32"),
            "sun_elevation": elevation,
            "daylight": pd.Series(labels, dtype=object).to_numpy(),
            "daylight_source": np.where(pd.isna(labels), None, source).astype(object),
        },
        index=rows.index,
    )
    if "frame_id" in rows:
        times.insert(0, "frame_id", rows["frame_id"].to_numpy())
    return TimeResult(times=times, n_ambiguous=n_ambiguous, n_missing=n_missing)


def settle_day_luma(db: Path, settings: Settings) -> bool:
    """After frames were added to a store whose day and night come from brightness
    (`Place.by_brightness`): when the camera's own day (`day_luma` of every frame) is not the
    stored one (its floor moved by a grey level or more, an hour joined or left, or none was
    stored), classify every frame again with it (`recompute`). Returns whether it did."""
    with store.connect(db) as con:
        if not stored_place(con).by_brightness:
            return False
        stored = DayLuma.from_json(kv.get(con, DAY_LUMA_KEY))
        rows = frames_store.time_inputs(con)  # taken_at: the camera clock ingest stored
        now = day_luma(rows["mean_luma"], rows["taken_at"], settings)
        if now is None and stored is None or now is not None and now.same(stored):
            return False
    recompute(db, settings)
    return True


def recompute(db: Path, settings: Settings) -> dict[str, Any]:
    """Redo taken_at_utc, utc_offset_min, sun_elevation, daylight for all frames of a store.

    Place values given in `settings` are remembered first; the rest come from the store.
    Returns counts: n_frames, n_ambiguous, n_missing, daylight (label -> n) and the place.
    """
    check_place(settings)
    with store.connect(db) as con:
        where = place(con, settings)
        rows = frames_store.time_inputs(con)
        result = compute_times(rows, dataclasses.replace(where, day_luma=None), settings)
        day = None
        if where.by_brightness:  # the camera's own day, by the hours of its clock just set
            local = result.times["taken_at"]
            day = day_luma(rows["mean_luma"], local, settings)
            if day is not None:  # only the labels change: the times stand
                labels, _ = classify(None, rows["mean_luma"], settings, day, _hours(local))
                result.times["daylight"] = labels
        kv.put(con, DAY_LUMA_KEY, None if day is None else day.to_json())
        if len(rows):
            frames_store.update_times(con, result.times)
    daylight = result.times["daylight"].fillna("unknown").value_counts().to_dict()
    return {
        "n_frames": len(rows),
        "n_ambiguous": result.n_ambiguous,
        "n_missing": result.n_missing,
        "daylight": daylight,
        "timezone": where.timezone,
        "lat": where.lat,
        "lon": where.lon,
        "clock_offset_minutes": where.clock_offset_minutes,
        "daylight_by": daylight_by(where),
    }


def daylight_note(where: Place) -> str:
    """What ingest's closing line says of how day and night were told where the user could tell
    them better: by the time zone's sun (a guess at the camera's place; wrong for a camera lit
    by its own lights), or by brightness for want of a time zone. Empty where the camera's
    place is set or brightness was asked for."""
    sun = where.sun()
    if (sun is not None and sun[2] == "sun") or where.daylight_from == "brightness":
        return ""
    note = f"day and night by {daylight_by(where)}"
    if sun is not None:
        note += "; a camera lit by its own lights (indoors): --daylight-from brightness"
    return note


def daylight_by(where: Place) -> str:
    """How `where` tells day from night, in words (`info`, `locate`)."""
    sun = where.sun()
    if sun is not None and sun[2] == "sun":
        return "the sun at the camera's location"
    if sun is not None:
        at = zone_place(where.timezone)
        return (
            f"the sun at the time zone's own place ({at.name}, {at.lat:.2f}, {at.lon:.2f}; "
            "--lat/--lon for the camera's own)"
        )
    if where.daylight_from == "brightness":
        return "each frame's brightness (--daylight-from brightness: lit by its own lights)"
    return "each frame's brightness (no time zone to place the sun: --timezone or --lat/--lon)"
