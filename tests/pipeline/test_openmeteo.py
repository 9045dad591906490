"""Open-Meteo archive fetch against a local HTTP server that answers in Open-Meteo's format."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

import store
from pipeline.errors import InputError, WeatherError
from pipeline.weather import fetch as openmeteo
from store import weather as store_weather
from tests.pipeline.test_weather_join import add_frames


def archive_answer(query: dict) -> dict:
    """What archive-api.open-meteo.com/v1/archive returns for these parameters (GMT times)."""
    start = pd.Timestamp(query["start_date"][0])
    end = pd.Timestamp(query["end_date"][0]) + pd.Timedelta(hours=23)
    hours = pd.date_range(start, end, freq="h")
    names = query["hourly"][0].split(",")
    n = len(hours)
    values = {
        "temperature_2m": [round(5 + (i % 24) * 0.5, 1) for i in range(n)],
        "precipitation": [1.5 if i % 24 == 6 else 0.0 for i in range(n)],
        "weather_code": [63 if i % 24 == 6 else (3 if i % 24 == 12 else 0) for i in range(n)],
        "cloud_cover": [100 if i % 24 in (6, 12) else 10 for i in range(n)],
        "wind_speed_10m": [2.5] * (n - 1) + [None],
    }
    units = {
        "temperature_2m": "°C",
        "precipitation": "mm",
        "weather_code": "wmo code",
        "cloud_cover": "%",
        "wind_speed_10m": "m/s",
    }
    return {
        "latitude": 51.45,
        "longitude": -0.97999996,
        "generationtime_ms": 1.2,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 60.0,
        "hourly_units": {"time": "iso8601", **{k: units[k] for k in names}},
        "hourly": {
            "time": [t.strftime("%Y-%m-%dT%H:%M") for t in hours],
            **{k: values[k] for k in names},
        },
    }


class Archive:
    """A local stand-in for the archive API; `fail_first` answers 503 that many times."""

    def __init__(self, fail_first: int = 0, error: str | None = None):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.error = error
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                query = parse_qs(urlparse(self.path).query)
                archive.requests.append(query)
                if archive.fail_first > 0:
                    archive.fail_first -= 1
                    self._send(503, {"error": True, "reason": "busy"})
                elif archive.error:
                    self._send(400, {"error": True, "reason": archive.error})
                else:
                    self._send(200, archive_answer(query))

            def _send(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/archive"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_fetch_covers_the_frames_span_and_stores_observations(db_path):
    add_frames(
        db_path,
        ["2024-04-02 10:00", "2024-04-03 18:00"],
        ["2024-04-02T10:00Z", "2024-04-03T18:00Z"],
    )
    with Archive() as archive:
        summary = openmeteo.fetch(db_path, 51.454, -0.978, base_url=archive.url, backoff_s=0)
    query = archive.requests[0]
    assert query["start_date"] == ["2024-04-02"] and query["end_date"] == ["2024-04-03"]
    assert query["timezone"] == ["GMT"] and query["wind_speed_unit"] == ["ms"]
    assert set(query["hourly"][0].split(",")) == set(openmeteo.HOURLY)
    assert summary.n_added == 48 and summary.format == "open-meteo-api"
    assert summary.stations == {"open-meteo:51.45,-0.98": 48}
    with store.connect(db_path, read_only=True) as con:
        obs = store_weather.observations(con)
        joined = con.sql(
            "SELECT condition, temperature_c FROM frame_facts ORDER BY frame_id"
        ).fetchall()
    assert obs.loc[6, "condition"] == "rain" and obs.loc[6, "weather_code"] == 63
    assert obs.loc[12, "condition"] == "cloudy" and obs.loc[0, "condition"] == "clear"
    assert obs.loc[0, "wind_speed_ms"] == 2.5 and pd.isna(obs.loc[47, "wind_speed_ms"])
    assert obs.loc[0, "source"] == "open-meteo-api"
    assert joined == [("clear", 10.0), ("clear", 14.0)]
    # a second fetch of the same span adds nothing
    with Archive() as archive:
        again = openmeteo.fetch(db_path, 51.454, -0.978, base_url=archive.url, backoff_s=0)
    assert again.n_added == 0 and again.n_duplicates == 48


def test_fetch_with_dates_splits_long_spans(db_path):
    with Archive() as archive:
        summary = openmeteo.fetch(
            db_path,
            51.454,
            -0.978,
            start="2023-01-01",
            end="2024-01-10",
            base_url=archive.url,
            backoff_s=0,
        )
    spans = [(q["start_date"][0], q["end_date"][0]) for q in archive.requests]
    assert spans == [("2023-01-01", "2024-01-01"), ("2024-01-02", "2024-01-10")]
    assert summary.n_added == (365 + 10) * 24


def test_fetch_retries_a_busy_server(db_path):
    with Archive(fail_first=2) as archive:
        summary = openmeteo.fetch(
            db_path,
            1.0,
            2.0,
            start="2024-01-01",
            end="2024-01-01",
            base_url=archive.url,
            backoff_s=0,
        )
    assert len(archive.requests) == 3 and summary.n_added == 24


def test_api_error_reason_is_one_clear_line(db_path):
    reason = "Parameter 'start_date' is out of allowed range from 1940-01-01 to 2026-11-27"
    with Archive(error=reason) as archive:
        with pytest.raises(
            WeatherError,
            match="Open-Meteo refused the request \\(HTTP 400\\): "
            "Parameter 'start_date' is out of allowed range",
        ):
            openmeteo.fetch(
                db_path,
                1.0,
                2.0,
                start="1900-01-01",
                end="1900-01-02",
                base_url=archive.url,
                backoff_s=0,
            )


def test_offline_is_a_clear_weather_error(db_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        WeatherError, match="cannot fetch weather from 127.0.0.1.*after 2 tries.*weather import"
    ):
        openmeteo.fetch(
            db_path,
            1.0,
            2.0,
            start="2024-01-01",
            end="2024-01-01",
            base_url=f"http://127.0.0.1:{port}/v1/archive",
            retries=1,
            backoff_s=0,
        )


def test_without_frames_or_dates_says_what_to_give(db_path):
    with pytest.raises(InputError, match="give --start and --end"):
        openmeteo.fetch(db_path, 1.0, 2.0, base_url="http://127.0.0.1:9/")
    with pytest.raises(InputError, match="--start must be a date"):
        openmeteo.fetch(db_path, 1.0, 2.0, start="April", end="2024-01-01")
    with pytest.raises(InputError, match="latitude must be"):
        openmeteo.fetch(db_path, 100.0, 2.0, start="2024-01-01", end="2024-01-01")


def test_json_and_csv_export_of_one_point_share_a_station():
    from pipeline.weather import station_name

    table = openmeteo.table_from_json(
        archive_answer(
            {"start_date": ["2024-01-01"], "end_date": ["2024-01-01"], "hourly": ["temperature_2m"]}
        )
    )
    assert table.default_station == station_name(51.45, -0.98) == "open-meteo:51.45,-0.98"
    with pytest.raises(WeatherError, match="not Open-Meteo's format"):
        openmeteo.table_from_json({"hourly": {}})
