"""store.weather: rows written read back equal, duplicates, replace, readers, the join views."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

import store
from store import weather as store_weather


def observations(
    n: int = 3, station: str = "s1", start: str = "2024-04-10T10:00Z", temperature: float = 10.0
) -> pd.DataFrame:
    times = pd.date_range(start, periods=n, freq="h")
    return pd.DataFrame(
        {
            "station": station,
            "observed_at": times,
            "temperature_c": [temperature + i for i in range(n)],
            "precipitation_mm": [0.0] * n,
            "cloud_cover_pct": [50.0] * n,
            "wind_speed_ms": [None] * n,
            "visibility_km": [12.5] * n,
            "weather_code": pd.array(([2] * (n - 1) + [None])[:n], dtype="Int64"),
            "condition": ["cloudy"] * n,
            "source": "test",
        }
    )


def test_rows_read_back_equal(db_path):
    written = observations()
    with store.connect(db_path) as con:
        assert store_weather.insert_observations(con, written) == (3, 0)
        back = store_weather.observations(con)
    assert list(back["observed_at"]) == list(written["observed_at"])
    assert list(back["temperature_c"]) == [10.0, 11.0, 12.0]
    assert back["wind_speed_ms"].isna().all()
    assert list(back["weather_code"].fillna(-1)) == [2, 2, -1]
    assert str(back["observed_at"].dt.tz) == "UTC"


def test_duplicates_are_kept_once_unless_replaced(db_path):
    with store.connect(db_path) as con:
        store_weather.insert_observations(con, observations())
        assert store_weather.insert_observations(con, observations(4, temperature=20)) == (1, 3)
        assert list(store_weather.observations(con)["temperature_c"]) == [10, 11, 12, 23]
        assert store_weather.insert_observations(
            con, observations(2, temperature=30), replace=True
        ) == (0, 2)
        assert list(store_weather.observations(con)["temperature_c"]) == [30, 31, 12, 23]
        assert store_weather.insert_observations(con, observations(0)) == (0, 0)


def test_readers(db_path):
    with store.connect(db_path) as con:
        store_weather.insert_observations(con, observations(3, "a"))
        store_weather.insert_observations(con, observations(5, "b"))
        assert store_weather.station_counts(con) == {"a": 3, "b": 5}
        assert store_weather.joined_station(con) == "b"
        table = store_weather.stations(con)
        assert list(table["station"]) == ["a", "b"] and list(table["is_joined"]) == [False, True]
        assert store_weather.tolerance_minutes(con) == 90.0
        store_weather.set_join(con, station="a", tolerance_minutes=30)
        assert store_weather.joined_station(con) == "a"
        assert store_weather.tolerance_minutes(con) == 30.0
        assert store_weather.frame_span(con) is None
        assert store_weather.condition_counts(con) == {}


def test_read_only_connection_cannot_write(db_path):
    with store.connect(db_path) as con:
        store_weather.insert_observations(con, observations())
    with store.connect(db_path, read_only=True) as con:
        with pytest.raises(duckdb.Error):
            store_weather.insert_observations(con, observations(5))
        assert sum(store_weather.station_counts(con).values()) == 3


def test_frame_weather_columns(db_path):
    with store.connect(db_path) as con:
        columns = [row[0] for row in con.execute("DESCRIBE frame_weather").fetchall()]
        facts = [row[0] for row in con.execute("DESCRIBE frame_facts").fetchall()]
    assert columns == [
        "frame_id",
        "station",
        "weather_observed_at",
        "temperature_c",
        "precipitation_mm",
        "cloud_cover_pct",
        "wind_speed_ms",
        "visibility_km",
        "weather_code",
        "condition",
    ]
    assert {"condition", "temperature_c", "precipitation_mm", "weather_station"} <= set(facts)


def _stored_is_live(con) -> pd.DataFrame:
    """The stored join (`frame_weather`, migration 8) is the live ASOF join's rows."""
    stored = con.sql("SELECT * FROM frame_weather ORDER BY frame_id").df()
    live = con.sql("SELECT * FROM frame_weather_live ORDER BY frame_id").df()
    pd.testing.assert_frame_equal(stored, live, check_dtype=False)
    return stored


def test_the_stored_join_follows_every_writer(db_path):
    """Every writer that changes what a frame joins to (frames ingested, re-read or re-timed;
    observations imported, re-imported with other values, another station or tolerance)
    leaves the stored join equal to the live one, in its own transaction."""
    from store import frames as frames_store
    from tests.store.test_frames import _frame_rows, _write

    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 12)  # 10:00-11:50 UTC
        _write(con, new=_frame_rows(ids[:8], [f"a/{i}.jpg" for i in ids[:8]]))
        assert set(_stored_is_live(con)["condition"]) == {"unknown"}  # no weather yet
        rain = observations(n=4, start="2024-04-01T09:00Z").assign(condition="rain")
        assert store_weather.insert_observations(con, rain) == (4, 0)  # after the frames
        assert set(_stored_is_live(con)["condition"]) == {"rain"}
        # re-imported with other values: the stored rows follow
        store_weather.insert_observations(
            con, rain.assign(condition="fog", temperature_c=-3.0), replace=True
        )
        joined = _stored_is_live(con)
        assert set(joined["condition"]) == {"fog"} and set(joined["temperature_c"]) == {-3.0}
        # a station with more rows is the one joined (no station chosen)
        store_weather.insert_observations(
            con, observations(n=6, station="s2", start="2024-04-01T09:30Z")
        )
        assert set(_stored_is_live(con)["station"]) == {"s2"}
        store_weather.set_join(con, station="s1")
        assert set(_stored_is_live(con)["station"]) == {"s1"}
        store_weather.set_join(con, tolerance_minutes=30)  # 12:00 frames are past 11:00+30
        assert "unknown" in set(_stored_is_live(con)["condition"])
        # frames ingested after the weather, and re-read frames with another time
        _write(con, new=_frame_rows(ids[8:], [f"b/{i}.jpg" for i in ids[8:]]))
        assert len(_stored_is_live(con)) == 12
        later = _frame_rows(ids[:2], [f"a/{i}.jpg" for i in ids[:2]])
        later["taken_at_utc"] += pd.Timedelta(hours=5)  # past every observation
        _write(con, reread=later)
        assert (
            _stored_is_live(con).set_index("frame_id").loc[ids[:2], "condition"].eq("unknown").all()
        )
        # re-timed frames (a clock fix) and frames without a UTC time (no row, as the view)
        times = con.execute(
            f"SELECT frame_id, {', '.join(frames_store.TIME_COLUMNS)} FROM frames "
            "WHERE frame_id IN (SELECT unnest(?))",
            [ids[2:5]],
        ).df()
        times["taken_at_utc"] = times["taken_at_utc"] - pd.Timedelta(minutes=50)
        times.loc[times.index[0], "taken_at_utc"] = pd.NaT
        frames_store.update_times(con, times)
        assert len(_stored_is_live(con)) == 11


def test_a_few_frames_join_as_the_view_joins_them(db_path):
    """`refresh_join` joins a batch of frames alone, with only the observations from the latest
    one at or before the batch's earliest frame: the rows are the view's for those frames,
    whatever part of the weather the batch falls in (before the first observation, between
    two, past the tolerance, after the last, frames without a UTC time)."""
    from store import frames as frames_store
    from tests.store.test_frames import _frame_rows, _write

    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 60)
        rows = _frame_rows(ids, [f"a/{i}.jpg" for i in ids])
        # 2024-04-01 from 06:00 UTC, a frame every 40 minutes: 06:00 .. 21:20 next day
        rows["taken_at_utc"] = pd.date_range("2024-04-01 06:00", periods=60, freq="40min", tz="UTC")
        rows.loc[rows.index[7], "taken_at_utc"] = pd.NaT
        _write(con, new=rows)
        # hourly observations 08:00-20:00 on 04-01, a gap, then 12:00-14:00 on 04-02; another
        # station with more rows earlier (the chosen one is not the busiest)
        store_weather.insert_observations(
            con, observations(13, start="2024-04-01T08:00Z").assign(condition="rain")
        )
        store_weather.insert_observations(con, observations(3, start="2024-04-02T12:00Z"))
        store_weather.insert_observations(con, observations(30, "s2", start="2024-03-31T00:00Z"))
        store_weather.set_join(con, station="s1", tolerance_minutes=45)
        assert {"rain", "cloudy", "unknown"} <= {
            r[0] for r in con.sql("SELECT condition FROM frame_weather_live").fetchall()
        }
        for chosen in (ids[:3], ids[2:9], ids[20:26], ids[40:], ids[::7], [ids[7]], ids):
            assert _joined(con, chosen) == _viewed(con, chosen)
        store_weather.set_join(con, station="s2")  # every frame but the earliest past it
        assert _joined(con, ids[30:40]) == _viewed(con, ids[30:40])
        assert {r[-1] for r in _joined(con, ids[30:40])} == {"unknown"}


def _joined(con, ids) -> list[tuple]:
    from store.migrations import frame_weather_join

    con.register("_chosen", pd.DataFrame({"frame_id": pd.Series(ids, dtype="int64")}))
    try:
        return sorted(con.sql(frame_weather_join("_chosen")).fetchall())
    finally:
        con.unregister("_chosen")


def _viewed(con, ids) -> list[tuple]:
    return sorted(
        con.execute(
            "SELECT * FROM frame_weather_live WHERE frame_id IN (SELECT unnest(?))", [list(ids)]
        ).fetchall()
    )
