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


def test_frame_weather_view_columns(db_path):
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
