"""The ASOF weather join through `frame_facts`: edge cases, station and tolerance, DST days."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import store
from pipeline import weather
from pipeline.daylight import recompute
from pipeline.errors import InputError
from pipeline.settings import Settings


def add_frames(
    db: Path, taken_at: list, taken_at_utc: list | None = None, mean_luma: list | None = None
) -> list[int]:
    """Frame rows as ingest would leave them (camera wall clock, optional UTC, brightness),
    joined to the weather as ingest's writer joins them."""
    n = len(taken_at)
    with store.connect(db) as con:
        start = con.execute("SELECT coalesce(max(frame_id), 0) FROM frames").fetchall()[0][0]
        ids = list(range(start + 1, start + n + 1))
        rows = pd.DataFrame(
            {
                "frame_id": ids,
                "path": [f"f/{i:06d}.jpg" for i in ids],
                "taken_at": pd.to_datetime(pd.Series(taken_at)),
                "taken_at_utc": pd.to_datetime(
                    pd.Series(taken_at_utc if taken_at_utc is not None else [None] * n), utc=True
                ),
                "mean_luma": pd.Series(
                    mean_luma if mean_luma is not None else [100.0] * n, dtype=float
                ),
            }
        )
        con.register("_rows", rows)
        con.execute("""
            INSERT INTO frames (frame_id, path, root, location, taken_at, taken_at_utc,
                                time_source, file_bytes, file_mtime, mean_luma)
            SELECT frame_id, path, '/frames', '/frames/' || path, taken_at, taken_at_utc,
                   'exif', 1000, now(), mean_luma FROM _rows""")
        store.weather.refresh_join(con, "_rows")  # as ingest's writer does (store.frames)
        con.unregister("_rows")
    return ids


def facts(db: Path) -> pd.DataFrame:
    with store.connect(db, read_only=True) as con:
        return con.sql(
            "SELECT frame_id, taken_at_utc, weather_station, weather_observed_at, "
            "condition, temperature_c, precipitation_mm FROM frame_facts "
            "ORDER BY frame_id"
        ).df()


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


HOURLY = """time,station,temperature_c,precipitation_mm,cloud_cover_pct
2024-04-10T10:00Z,home,10.0,0.0,10
2024-04-10T11:00Z,home,11.0,2.0,100
2024-04-10T12:00Z,home,12.0,0.0,90
2024-04-10T16:00Z,home,16.0,0.0,0
2024-04-10T11:00Z,away,30.0,0.0,0
"""


@pytest.fixture
def joined(tmp_path) -> Path:
    db = tmp_path / "j.duckdb"
    weather.import_csv(write_csv(tmp_path / "w.csv", HOURLY), db)
    utc = [
        "2024-04-10T09:59Z",  # before the first observation -> unknown
        "2024-04-10T10:00Z",  # exact match -> 10:00
        "2024-04-10T11:59Z",  # latest at or before -> 11:00 (rain)
        "2024-04-10T13:30Z",  # 90 min after 12:00 -> still 12:00 (tolerance inclusive)
        "2024-04-10T14:00Z",  # 120 min after 12:00, gap beyond tolerance -> unknown
        "2024-04-10T16:05Z",  # after the gap -> 16:00
        None,
    ]  # no UTC time -> unknown
    add_frames(db, [pd.Timestamp(t).tz_localize(None) if t else None for t in utc], utc)
    return db


def test_asof_edge_cases_through_frame_facts(joined):
    got = facts(joined)
    assert list(got["condition"]) == [
        "unknown",
        "clear",
        "rain",
        "cloudy",
        "unknown",
        "clear",
        "unknown",
    ]
    assert list(got["weather_station"].fillna("-")) == [
        "-",
        "home",
        "home",
        "home",
        "-",
        "home",
        "-",
    ]
    assert list(got["temperature_c"].fillna(-1)) == [-1, 10.0, 11.0, 12.0, -1, 16.0, -1]
    assert got.loc[2, "precipitation_mm"] == 2.0
    assert got.loc[1, "weather_observed_at"] == pd.Timestamp("2024-04-10T10:00Z")


def test_tolerance_and_station_settings_change_the_join(joined):
    weather.set_join(joined, tolerance_minutes=150)
    assert list(facts(joined)["condition"])[4] == "cloudy"  # 14:00 now gets 12:00
    weather.set_join(joined, tolerance_minutes=30)
    assert list(facts(joined)["condition"])[:4] == ["unknown", "clear", "unknown", "unknown"]
    weather.set_join(joined, station="away", tolerance_minutes=90)
    got = facts(joined)
    assert list(got["condition"]) == [
        "unknown",
        "unknown",
        "clear",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]
    assert got.loc[2, "temperature_c"] == 30.0
    assert "frames joined to station away within 90 min" in weather.describe_join(joined)
    with pytest.raises(InputError, match="no weather station 'moon'.*stations: away, home"):
        weather.set_join(joined, station="moon")
    with pytest.raises(InputError, match="positive"):
        weather.set_join(joined, tolerance_minutes=0)


def test_default_station_is_the_one_with_most_rows(joined):
    text = weather.describe_stations(joined)
    assert "* home: 4 observations" in text and "  away: 1 observations" in text


def test_spring_forward_and_fall_back_days_join_the_right_hour(nyc_weather, tmp_path):
    """Frames in New York wall-clock time on both 2013 DST days get the observation of their
    own hour: the real table's local hour column says which that is."""
    db = tmp_path / "dst.duckdb"
    weather.import_csv(nyc_weather, db, station="JFK")
    local = [
        "2013-03-10 01:30",
        "2013-03-10 03:10",
        "2013-03-10 03:59",
        "2013-11-03 00:50",
        "2013-11-03 01:20",
        "2013-11-03 01:50",  # summer time
        "2013-11-03 01:20",
        "2013-11-03 01:50",
        "2013-11-03 02:20",
    ]  # again, winter time
    add_frames(db, local)
    done = recompute(db, Settings(timezone="America/New_York"))
    assert done["n_ambiguous"] == 4 and done["n_missing"] == 0
    got = facts(db)
    assert [t.strftime("%m-%d %H:%M") for t in got["taken_at_utc"]] == [
        "03-10 06:30",
        "03-10 07:10",
        "03-10 07:59",
        "11-03 04:50",
        "11-03 05:20",
        "11-03 05:50",
        "11-03 06:20",
        "11-03 06:50",
        "11-03 07:20",
    ]
    table = pd.read_csv(nyc_weather)
    jfk = (
        table[table.origin == "JFK"]
        .assign(observed_at=lambda t: pd.to_datetime(t.time_hour, utc=True))
        .set_index("observed_at")
    )
    # the real table has no JFK row at local midnight of 3 November (04:00 UTC), and the one
    # before is 2.5 h earlier: beyond the 90 min tolerance, so 00:50 is 'unknown'
    assert pd.Timestamp("2013-11-03T04:00Z") not in jfk.index
    assert got.loc[3, "condition"] == "unknown" and pd.isna(got.loc[3, "weather_observed_at"])
    rest = got.drop(index=3)
    local_hours = [int(jfk.loc[t, "hour"]) for t in rest["weather_observed_at"]]
    assert local_hours == [1, 3, 3, 1, 1, 1, 1, 2]
    expected_c = [(jfk.loc[t, "temp"] - 32) * 5 / 9 for t in rest["weather_observed_at"]]
    assert list(rest["temperature_c"]) == pytest.approx(expected_c)
    # the two passes through 01:xx on 3 November get different observations (05:00, 06:00 UTC)
    assert got.loc[4, "weather_observed_at"] == pd.Timestamp("2013-11-03T05:00Z")
    assert got.loc[6, "weather_observed_at"] == pd.Timestamp("2013-11-03T06:00Z")
