"""Clock check: frames whose brightness follows the real sun, with the camera clock planted off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import store
from pipeline import clock
from pipeline.daylight import recompute, sun_elevation
from pipeline.errors import AnalysisError, InputError
from pipeline.settings import Settings
from store import kv
from tests.pipeline.test_weather_join import add_frames

LAT, LON, ZONE = 51.454, -0.978, "Europe/London"  # Reading, UK
PLACE = Settings(timezone=ZONE, lat=LAT, lon=LON)


def camera_frames(
    db: Path,
    start="2024-03-24",
    days=14,
    every_min=10,
    clock_minutes=0.0,
    stays_on_winter_time=False,
    drift_min_per_day=0.0,
    seed=0,
) -> None:
    """Frames lit by the real sun at LAT/LON; the camera's wall clock is off by `clock_minutes`
    (negative = slow), optionally ignores the DST change, or drifts."""
    rng = np.random.default_rng(seed)
    true_utc = pd.date_range(
        start, periods=days * 24 * 60 // every_min, freq=f"{every_min}min", tz="UTC"
    )
    elevation = sun_elevation(true_utc, LAT, LON)
    day_of = (true_utc - true_utc[0]).days
    cloudiness = rng.uniform(0.35, 1.0, days + 1)[day_of]  # dull and bright days
    luma = 18 + 175 * cloudiness / (1 + np.exp(-(elevation + 2.0) / 1.6))
    luma += rng.normal(0, 3, len(luma))
    odd = rng.choice(len(luma), size=len(luma) // 200, replace=False)  # headlights, a knock
    luma[odd] = rng.uniform(0, 255, len(odd))
    wall_zone = "UTC" if stays_on_winter_time else ZONE
    wall = true_utc.tz_convert(wall_zone).tz_localize(None)
    elapsed_days = (true_utc - true_utc[0]).total_seconds() / 86400
    wall = wall + pd.to_timedelta(clock_minutes + drift_min_per_day * elapsed_days, unit="min")
    add_frames(db, list(wall), mean_luma=list(np.clip(luma, 0, 255)))
    recompute(db, PLACE)


def test_planted_offset_is_found_and_corrected(db_path):
    camera_frames(db_path, clock_minutes=-47)  # camera 47 minutes slow
    result = clock.check_clock(db_path, Settings())
    assert result.offset_minutes == pytest.approx(47, abs=15)
    assert result.offset_minutes == pytest.approx(47, abs=3)  # in practice much closer
    assert result.n_days >= 12 and result.step is None
    assert result.suggested_clock_offset_minutes == pytest.approx(47, abs=3)
    minutes = round(result.offset_minutes)
    assert f"{minutes} min slow" in result.verdict
    assert f"--clock-offset {minutes}" in result.verdict
    with store.connect(db_path, read_only=True) as con:
        saved = kv.get(con, "clock_check")
    assert saved["offset_minutes"] == result.offset_minutes
    assert saved["n_days"] == result.n_days and len(saved["days"]) == result.n_days
    assert saved["summary"].startswith(result.verdict)
    assert set(saved["days"][0]) >= {"date", "offset_minutes", "dawn_utc", "sunrise_utc"}
    # correct the clock: the times move, and a new check finds ~0 and keeps the suggestion
    recompute(db_path, Settings(clock_offset_minutes=result.suggested_clock_offset_minutes))
    again = clock.check_clock(db_path, Settings())
    assert again.offset_minutes == pytest.approx(0, abs=3) and again.is_ok
    assert again.suggested_clock_offset_minutes == pytest.approx(47, abs=3)
    assert "agrees with the sun" in again.verdict


def test_right_clock_gives_about_zero(db_path):
    camera_frames(db_path, seed=3)
    result = clock.check_clock(db_path, Settings())
    assert result.offset_minutes == pytest.approx(0, abs=3)
    assert result.is_ok and "agrees with the sun" in result.verdict
    assert abs(result.drift_minutes_per_day) < 0.5


def test_fast_clock_an_hour_off_hints_at_the_zone(db_path):
    camera_frames(db_path, clock_minutes=62, seed=5)
    result = clock.check_clock(db_path, Settings())
    assert result.offset_minutes == pytest.approx(-62, abs=5)
    assert "62 min fast" in result.verdict and "wrong time zone" in result.verdict


def test_camera_that_missed_the_dst_change(db_path):
    camera_frames(db_path, stays_on_winter_time=True)
    result = clock.check_clock(db_path, Settings())
    assert result.step is not None
    assert result.step["jump_minutes"] == pytest.approx(60, abs=10)
    assert result.step["dst_change"] == "2024-03-31"
    assert "did not follow the daylight-saving change" in result.verdict
    assert result.step["fixed_zone"] == "Etc/GMT"  # it kept winter time (UTC+0)
    assert "--timezone Etc/GMT`" in result.verdict
    # following the advice puts every day right
    recompute(db_path, Settings(timezone="Etc/GMT"))
    fixed = clock.check_clock(db_path, Settings())
    assert fixed.step is None and fixed.offset_minutes == pytest.approx(0, abs=3)


def test_drift_is_measured(db_path):
    camera_frames(db_path, drift_min_per_day=-2.0, days=16, seed=9)
    result = clock.check_clock(db_path, Settings())
    assert result.drift_minutes_per_day == pytest.approx(2.0, abs=0.5)
    assert "drifts" in result.verdict


def test_needs_a_place_and_frames(db_path):
    add_frames(db_path, ["2024-04-01 12:00"], ["2024-04-01T12:00Z"])
    with pytest.raises(InputError, match="locate"):
        clock.check_clock(db_path, Settings())
    result = clock.check_clock(db_path, PLACE)  # one frame: no usable day
    assert result.n_days == 0 and "cannot check the clock" in result.verdict
    with pytest.raises(AnalysisError):
        clock.estimate(pd.DataFrame({"taken_at_utc": [], "mean_luma": []}), LAT, LON)
