"""Clock check: is the camera clock off (wrong zone, missed DST change, drift)? Ask the sun.

Day by day, the frames' brightness (`mean_luma`) shows when the camera saw dawn and dusk; the
sun's path at the stored place (astral) says when they really were. Method, per solar day
(UTC shifted by longitude, so a day runs midnight to midnight of the sun):

1. Smooth the brightness with a running median of three frames (one odd frame cannot fake a
   dawn) and take the day's night level (10th percentile) and day level (90th percentile); a day
   whose levels differ by less than `MIN_CONTRAST` luma, or that has no dark frame before and
   after its bright frames, is skipped.
2. Dawn is when the brightness first rises through the level halfway between night and day,
   dusk when it last falls through it, interpolated between the two frames around each
   crossing (frames further apart than `MAX_GAP_MIN` make the day unusable).
3. The day's offset is solar noon minus the middle of dawn and dusk, in minutes. Using the
   middle cancels the camera's own bias (an auto-exposure camera gets bright before sunrise
   and stays bright after sunset by about the same time), which shows instead as the bright
   period being longer than sunrise-to-sunset (`bias_minutes`).

The estimate is the median over days (robust to cloudy or odd days), with the spread (median
absolute deviation), a drift (Theil-Sen slope of the daily offsets, minutes per day), and a
step of about an hour between two runs of days (a camera that did not follow a DST change).
The offset is in the `clock_offset_minutes` sense: minutes to add to the frames' times (as
already corrected by the stored clock offset) to make them right; the suggested setting is the
stored offset plus it. The result is stored in the store's settings as 'clock_check' (a JSON
dict: `summary` one line, `offset_minutes`, `n_days`, `days` one dict per usable day, ...) for
`info` and the dashboard.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

import store
from pipeline.errors import AnalysisError, InputError
from pipeline.settings import Settings
from store import kv
from store import weather as store_weather

log = logging.getLogger(__name__)

MIN_CONTRAST = 15.0  # luma between a day's night and day levels
MAX_GAP_MIN = 45.0  # largest gap between the frames around a dawn or dusk
MIN_FRAMES_PER_DAY = 8
OK_MINUTES = 10.0  # a clock within this of the sun is called right
STEP_MINUTES = (40.0, 80.0)  # a jump of this size between runs of days looks like DST
KV_KEY = "clock_check"


@dataclass
class DayEstimate:
    date: str
    offset_minutes: float
    bias_minutes: float
    dawn_utc: str
    dusk_utc: str
    sunrise_utc: str
    sunset_utc: str
    n_frames: int


@dataclass
class ClockCheck:
    """The result of one clock check (also stored as the 'clock_check' setting)."""

    offset_minutes: float | None
    n_days: int
    n_days_seen: int
    spread_minutes: float | None = None
    drift_minutes_per_day: float | None = None
    current_clock_offset_minutes: float = 0.0
    suggested_clock_offset_minutes: float | None = None
    step: dict | None = None
    verdict: str = ""
    lat: float | None = None
    lon: float | None = None
    checked_at: str = ""
    days: list = field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        return (
            self.offset_minutes is not None
            and abs(self.offset_minutes) < OK_MINUTES
            and self.step is None
        )

    @property
    def summary(self) -> str:
        """One line for `info` and the dashboard."""
        if not self.n_days:
            return self.verdict
        return f"{self.verdict} ({self.n_days} days, checked {self.checked_at[:16]} UTC)"

    def to_dict(self) -> dict:
        """The stored form: every field, plus `summary` (one line)."""
        return {**asdict(self), "summary": self.summary}

    def describe(self) -> str:
        lines = [f"clock check: {self.verdict}"]
        if self.n_days:
            lines.append(
                f"  {self.n_days} of {self.n_days_seen} days usable; offset "
                f"{self.offset_minutes:+.1f} min (spread {self.spread_minutes:.1f} min)"
                + (
                    f", drift {self.drift_minutes_per_day * 30:+.1f} min per 30 days"
                    if self.drift_minutes_per_day is not None and self.step is None
                    else ""
                )
            )
            for day in (
                self.days[:3]
                + (["..."] if len(self.days) > 6 else [])
                + self.days[max(3, len(self.days) - 3) :]
            ):
                if day == "...":
                    lines.append("    ...")
                    continue
                lines.append(
                    f"    {day['date']}: {day['offset_minutes']:+6.1f} min "
                    f"(bright {day['dawn_utc'][11:16]}-{day['dusk_utc'][11:16]} UTC, "
                    f"sun {day['sunrise_utc'][11:16]}-{day['sunset_utc'][11:16]})"
                )
        return "\n".join(lines)


def check_clock(db: Path, settings: Settings | None = None) -> ClockCheck:
    """Estimate the camera clock's offset from the frames' dawns and dusks; store and return it."""
    settings = settings or Settings()
    with store.connect(db) as con:
        stored = kv.get_all(con)
        frames = store_weather.frame_brightness(con)
    lat = settings.lat if settings.lat is not None else stored.get("lat")
    lon = settings.lon if settings.lon is not None else stored.get("lon")
    if lat is None or lon is None:
        raise InputError(
            f"the clock check needs the camera's place: run `python -m pipeline "
            f"locate --db {db} --timezone TZ --lat LAT --lon LON` first"
        )
    current = float(stored.get("clock_offset_minutes", settings.clock_offset_minutes) or 0.0)
    zone_name = settings.timezone or stored.get("timezone")
    result = estimate(frames, float(lat), float(lon), current_offset=current, zone=_zone(zone_name))
    result.verdict = result.verdict.replace("--db FILE", f"--db {db}")
    with store.connect(db) as con:
        kv.put(con, KV_KEY, result.to_dict())
    return result


def estimate(
    frames: pd.DataFrame,
    lat: float,
    lon: float,
    current_offset: float = 0.0,
    zone: ZoneInfo | None = None,
) -> ClockCheck:
    """The clock check on a table of frames (`taken_at_utc`, `mean_luma`)."""
    checked_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if frames.empty:
        raise AnalysisError(
            "no frames with a time and a brightness to check the clock with; ingest frames first"
        )
    times = pd.to_datetime(frames["taken_at_utc"], utc=True)
    luma = frames["mean_luma"].astype(float).to_numpy()
    order = np.argsort(times.to_numpy())
    times, luma = times.iloc[order].reset_index(drop=True), luma[order]
    solar_day = (times + pd.to_timedelta(lon * 4.0, unit="min")).dt.date
    days = []
    for day, index in pd.Series(range(len(times))).groupby(solar_day.to_numpy()):
        estimate_ = _day(day, times.iloc[index.to_numpy()], luma[index.to_numpy()], lat, lon)
        if estimate_ is not None:
            days.append(estimate_)
    n_seen = int(pd.Series(solar_day).nunique())
    result = ClockCheck(
        offset_minutes=None,
        n_days=len(days),
        n_days_seen=n_seen,
        current_clock_offset_minutes=current_offset,
        lat=lat,
        lon=lon,
        checked_at=checked_at,
        days=[asdict(d) for d in days],
    )
    if not days:
        result.verdict = (
            "cannot check the clock: no day has both a dawn and a dusk in the "
            "frames (it needs frames through the night, at most "
            f"{MAX_GAP_MIN:g} min apart around dawn and dusk)"
        )
        return result
    offsets = np.array([d.offset_minutes for d in days])
    dates = np.array([dt.date.fromisoformat(d.date).toordinal() for d in days], dtype=float)
    result.offset_minutes = round(float(np.median(offsets)), 1)
    result.spread_minutes = round(float(np.median(np.abs(offsets - np.median(offsets)))), 1)
    if len(days) >= 4 and dates.max() - dates.min() >= 7:
        result.drift_minutes_per_day = round(_theil_sen(dates, offsets), 3)
    result.step = _step(days, offsets, zone)
    result.suggested_clock_offset_minutes = round(current_offset + result.offset_minutes)
    result.verdict = _verdict(result)
    return result


def _day(
    day: dt.date, times: pd.Series, luma: np.ndarray, lat: float, lon: float
) -> DayEstimate | None:
    if len(luma) < MIN_FRAMES_PER_DAY:
        return None
    smooth = pd.Series(luma).rolling(3, center=True, min_periods=1).median().to_numpy()
    night, bright = np.percentile(smooth, 10), np.percentile(smooth, 90)
    if bright - night < MIN_CONTRAST:
        return None
    level = night + 0.5 * (bright - night)
    above = np.flatnonzero(smooth >= level)
    first, last = above[0], above[-1]
    if first == 0 or last == len(smooth) - 1:
        return None
    seconds = (times - times.iloc[0]).dt.total_seconds().to_numpy()
    dawn = _crossing(seconds, smooth, first - 1, first, level)
    dusk = _crossing(seconds, smooth, last, last + 1, level)
    if dawn is None or dusk is None:
        return None
    sun = _sun(day, lat, lon)
    if sun is None:
        return None
    sunrise, noon, sunset = sun
    start = times.iloc[0]
    dawn_at = start + pd.Timedelta(seconds=dawn)
    dusk_at = start + pd.Timedelta(seconds=dusk)
    middle = dawn_at + (dusk_at - dawn_at) / 2
    offset = (noon - middle).total_seconds() / 60.0
    bias = ((dusk_at - dawn_at) - (sunset - sunrise)).total_seconds() / 120.0
    return DayEstimate(
        date=day.isoformat(),
        offset_minutes=round(offset, 1),
        bias_minutes=round(bias, 1),
        dawn_utc=_iso(dawn_at),
        dusk_utc=_iso(dusk_at),
        sunrise_utc=_iso(sunrise),
        sunset_utc=_iso(sunset),
        n_frames=int(len(luma)),
    )


def _crossing(seconds: np.ndarray, luma: np.ndarray, i: int, j: int, level: float) -> float | None:
    if (seconds[j] - seconds[i]) / 60.0 > MAX_GAP_MIN:
        return None
    if luma[j] == luma[i]:
        return float((seconds[i] + seconds[j]) / 2)
    share = (level - luma[i]) / (luma[j] - luma[i])
    return float(seconds[i] + share * (seconds[j] - seconds[i]))


def _sun(day: dt.date, lat: float, lon: float):
    """(sunrise, solar noon, sunset) in UTC as Timestamps, or None (polar day or night)."""
    from astral import Observer
    from astral.sun import sun

    try:
        times = sun(Observer(latitude=lat, longitude=lon), date=day, tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return tuple(pd.Timestamp(times[key]) for key in ("sunrise", "noon", "sunset"))


def _theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    return float(np.median((y[j] - y[i])[keep] / dx[keep]))


def _step(days: list[DayEstimate], offsets: np.ndarray, zone: ZoneInfo | None) -> dict | None:
    """The best split into two runs of days; reported when the jump looks like a DST change."""
    n = len(offsets)
    if n < 4:
        return None
    best = None
    for k in range(2, n - 1):
        a, b = offsets[:k], offsets[k:]
        cost = np.abs(a - np.median(a)).sum() + np.abs(b - np.median(b)).sum()
        if best is None or cost < best[0]:
            best = (cost, k)
    k = best[1]
    before, after = float(np.median(offsets[:k])), float(np.median(offsets[k:]))
    jump = after - before
    noise = max(np.median(np.abs(offsets[:k] - before)), np.median(np.abs(offsets[k:] - after)))
    if not (STEP_MINUTES[0] <= abs(jump) <= STEP_MINUTES[1]) or noise > 15:
        return None
    change = _dst_change(
        dt.date.fromisoformat(days[k - 1].date), dt.date.fromisoformat(days[k].date), zone
    )
    # The run of days closer to the sun is the one whose zone offset the camera kept.
    right = before if abs(before) <= abs(after) else after
    kept_date = days[k - 1].date if abs(before) <= abs(after) else days[k].date
    return {
        "after_date": days[k - 1].date,
        "before_date": days[k].date,
        "offset_before_minutes": round(before, 1),
        "offset_after_minutes": round(after, 1),
        "jump_minutes": round(jump, 1),
        "dst_change": change,
        "fixed_zone": _fixed_zone(zone, dt.date.fromisoformat(kept_date)),
        "remaining_offset_minutes": round(right, 1),
    }


def _fixed_zone(zone: ZoneInfo | None, day: dt.date) -> str | None:
    """The Etc/GMT zone with `zone`'s offset on `day` (whole hours only), or None."""
    if zone is None:
        return None
    offset = dt.datetime.combine(day, dt.time(12), zone).utcoffset()
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    if rest:
        return None
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{-hours:+d}"  # Etc names flip the sign


def _dst_change(first: dt.date, last: dt.date, zone: ZoneInfo | None) -> str | None:
    if zone is None:
        return None
    day = first
    previous = dt.datetime.combine(day, dt.time(12), zone).utcoffset()
    while day < last:
        day += dt.timedelta(days=1)
        offset = dt.datetime.combine(day, dt.time(12), zone).utcoffset()
        if offset != previous:
            return day.isoformat()
        previous = offset
    return None


def _verdict(result: ClockCheck) -> str:
    offset = result.offset_minutes
    fix = (
        f"correct it with `python -m pipeline locate --db FILE --clock-offset "
        f"{result.suggested_clock_offset_minutes:g}`"
    )
    if result.step is not None:
        step = result.step
        when = (
            f" at the DST change of {step['dst_change']}"
            if step["dst_change"]
            else f" between {step['after_date']} and {step['before_date']}"
        )
        text = (
            f"the clock offset jumps by {_signed(step['jump_minutes'])} min{when} "
            f"({_signed(step['offset_before_minutes'])} before, "
            f"{_signed(step['offset_after_minutes'])} after): the camera probably did not "
            "follow the daylight-saving change"
        )
        if step.get("fixed_zone"):
            command = f"python -m pipeline locate --db FILE --timezone {step['fixed_zone']}"
            rest = step["remaining_offset_minutes"]
            if abs(rest) >= OK_MINUTES or abs(result.current_clock_offset_minutes) >= 1:
                total = round(result.current_clock_offset_minutes + rest)
                command += f" --clock-offset {total:g}"
            text += f"; its clock kept one offset: use `{command}`"
        else:
            text += "; frames on each side of the change need a different correction"
        return text
    if abs(offset) < OK_MINUTES:
        text = f"the camera clock agrees with the sun (offset {_signed(offset)} min)"
    else:
        direction = "slow" if offset > 0 else "fast"
        text = f"the camera clock looks {abs(offset):.0f} min {direction}"
        hours = round(offset / 60.0)
        if hours and abs(offset - 60 * hours) < OK_MINUTES:
            text += (
                f", about {abs(hours)} hour{'s' if abs(hours) > 1 else ''}: a wrong time "
                "zone or a missed DST change?"
            )
        text += f"; {fix}"
    drift = result.drift_minutes_per_day
    if drift is not None and abs(drift) * 30 >= OK_MINUTES / 2:
        text += f"; it drifts {drift * 30:+.0f} min per 30 days"
    return text


def _signed(minutes: float) -> str:
    return f"{int(round(minutes)):+d}"


def stored(db: Path) -> dict | None:
    """The last stored clock check (the 'clock_check' setting), or None."""
    with store.connect(db, read_only=True) as con:
        return kv.get(con, KV_KEY)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _iso(moment: pd.Timestamp) -> str:
    return moment.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
