"""CLI: `weather import` (`--replace`), `weather fetch`, `weather stations`, `locate`, `clock` (exit codes, text)."""

from __future__ import annotations

import socket

from click.testing import CliRunner

import store
from pipeline.cli import cli
from store import kv
from store import weather as store_weather
from tests.pipeline.test_clock import camera_frames
from tests.pipeline.test_openmeteo import Archive
from tests.pipeline.test_weather_join import add_frames, facts


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_weather_import_prints_the_summary_and_reimport_adds_nothing(nyc_weather, db_path):
    code, out = invoke("weather", "import", nyc_weather, "--db", db_path)
    assert code == 0, out
    assert "26115 rows read, 3 station(s) (EWR 8703, JFK 8706, LGA 8706)" in out
    assert "added 26115, already in the store 0" in out
    assert "line 1011 wind_speed '1048.36058'" in out
    code, out = invoke("weather", "import", nyc_weather, "--db", db_path)
    assert code == 0 and "added 0, already in the store 26115" in out


def test_weather_import_options(db_path, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("when,t,w\n2024-04-10 12:00,20,36\n")
    code, out = invoke(
        "weather",
        "import",
        path,
        "--db",
        db_path,
        "--station",
        "garden",
        "--columns",
        "time=when,temperature_c=t,wind_speed_ms=w:kmh",
        "--units",
        "si",
        "--timezone",
        "Europe/Berlin",
    )
    assert code == 0, out
    assert "garden 1" in out and "2024-04-10 10:00 .. 2024-04-10 10:00 UTC" in out


def _observations_at(db_path) -> dict:
    with store.connect(db_path, read_only=True) as con:
        obs = store_weather.observations(con)
    return {
        (row.station, row.observed_at.strftime("%H:%M")): row.temperature_c
        for row in obs.itertuples()
    }


def test_weather_import_replace_takes_a_corrected_file(db_path, tmp_path):
    """A file imported with a bad value, then corrected: a plain re-import keeps the stored
    rows and says how to replace them; `--replace` replaces the station's hours the file has
    and nothing else."""
    path = tmp_path / "garden.csv"
    path.write_text("time,temp\n2024-04-01T00:00Z,5\n2024-04-01T01:00Z,six\n")
    other = tmp_path / "field.csv"
    other.write_text("time,temp\n2024-04-01T01:00Z,9\n")
    for csv in (path, other):
        code, out = invoke("weather", "import", csv, "--db", db_path, "--units", "si")
        assert code == 0, out
    path.write_text("time,temp\n2024-04-01T00:00Z,5\n2024-04-01T01:00Z,6\n")
    code, out = invoke("weather", "import", path, "--db", db_path, "--units", "si")
    assert code == 0, out
    assert (
        "added 0, already in the store 2 (kept as stored; `weather import --replace` "
        "replaces them with this file's values)" in out
    )
    assert _observations_at(db_path)[("garden", "01:00")] != 6.0  # still NULL
    # the corrected file now starts an hour later and goes on one hour further
    path.write_text("time,temp\n2024-04-01T01:00Z,6\n2024-04-01T02:00Z,7\n")
    code, out = invoke("weather", "import", path, "--db", db_path, "--units", "si", "--replace")
    assert code == 0, out
    assert "added 1, replaced 1 (same station and time)" in out
    assert _observations_at(db_path) == {
        ("field", "01:00"): 9.0,  # another station: untouched
        ("garden", "00:00"): 5.0,  # an hour the file has no row for: untouched
        ("garden", "01:00"): 6.0,
        ("garden", "02:00"): 7.0,
    }
    code, out = invoke("weather", "import", "--help")
    assert "--replace" in out and "replace the stored observations" in out


def test_bad_columns_are_one_line_errors(nyc_weather, db_path, tmp_path):
    code, out = invoke(
        "weather", "import", nyc_weather, "--db", db_path, "--columns", "temperature_c=nope"
    )
    assert code == 1
    assert out.startswith("error: column 'nope' (for temperature_c) is not in generic file")
    assert out.count("\n") == 1 and "Traceback" not in out
    code, out = invoke("weather", "import", nyc_weather, "--db", db_path, "--columns", "temp")
    assert code == 1 and "TARGET=COLUMN pairs" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    code, out = invoke("weather", "import", bad, "--db", db_path)
    assert code == 1 and out.startswith("error: no time column in bad.csv")
    code, out = invoke("weather", "import", nyc_weather, "--db", db_path, "--timezone", "Mars/X")
    assert code == 1 and "unknown time zone 'Mars/X'" in out
    code, out = invoke("weather", "import", tmp_path / "none.csv", "--db", db_path)
    assert code == 2 and "does not exist" in out


def test_weather_fetch_uses_the_stored_place_and_reports_offline(db_path):
    add_frames(db_path, ["2024-04-02 10:00"], ["2024-04-02T10:00Z"])
    code, out = invoke("weather", "fetch", "--db", db_path)
    assert code == 1 and "give --lat and --lon" in out
    with store.connect(db_path) as con:
        kv.put(con, "lat", 51.454)
        kv.put(con, "lon", -0.978)
    with Archive() as archive:
        code, out = invoke("weather", "fetch", "--db", db_path, "--url", archive.url)
    assert code == 0, out
    assert "added 24" in out and "open-meteo:51.45,-0.98 24" in out
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out = invoke(
        "weather",
        "fetch",
        "--db",
        db_path,
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-01",
        "--url",
        f"http://127.0.0.1:{port}/v1/archive",
        "--retries",
        0,
    )
    assert code == 1 and out.startswith("error: cannot fetch weather from 127.0.0.1")


def test_weather_stations_lists_and_switches(nyc_weather, db_path):
    invoke("weather", "import", nyc_weather, "--db", db_path)
    add_frames(db_path, ["2013-06-01 08:10"], ["2013-06-01T12:10Z"])
    code, out = invoke("weather", "stations", "--db", db_path)
    assert code == 0
    assert "* JFK: 8706 observations" in out and "  EWR: 8703 observations" in out
    code, out = invoke("weather", "stations", "--db", db_path, "--use", "EWR", "--tolerance", 60)
    assert code == 0 and "* EWR" in out and "station EWR within 60 min" in out
    assert facts(db_path).loc[0, "weather_station"] == "EWR"
    code, out = invoke("weather", "stations", "--db", db_path, "--use", "XXX")
    assert code == 1 and "no weather station 'XXX'" in out


def test_locate_recomputes_times_and_the_join(db_path, tmp_path):
    csv = tmp_path / "w.csv"
    csv.write_text(
        "time,temperature_c,precipitation_mm\n2024-04-10T10:00Z,10,0\n2024-04-10T11:00Z,11,3\n"
    )
    invoke("weather", "import", csv, "--db", db_path)
    add_frames(db_path, ["2024-04-10 12:30"])  # camera wall clock, no UTC yet
    assert facts(db_path).loc[0, "condition"] == "unknown"
    code, out = invoke(
        "locate", "--db", db_path, "--timezone", "Europe/Berlin", "--lat", 52.5, "--lon", 13.4
    )
    assert code == 0, out
    assert "place: 52.5000, 13.4000; time zone Europe/Berlin" in out
    assert "frames joined to station w within 90 min: dry 1" in out
    row = facts(db_path).iloc[0]
    assert row["taken_at_utc"].strftime("%H:%M") == "10:30" and row["condition"] == "dry"
    with store.connect(db_path, read_only=True) as con:
        assert kv.get(con, "timezone") == "Europe/Berlin" and kv.get(con, "lat") == 52.5
    code, out = invoke("locate", "--db", db_path, "--clock-offset", 45)
    assert code == 0 and "clock offset +45 min" in out
    row = facts(db_path).iloc[0]  # 11:15 UTC: the 11:00 rain
    assert row["taken_at_utc"].strftime("%H:%M") == "11:15" and row["condition"] == "rain"
    code, out = invoke("locate", "--db", db_path, "--clock-offset", 0)
    assert code == 0 and facts(db_path).loc[0, "condition"] == "dry"
    code, out = invoke("locate", "--db", db_path, "--timezone", "Nowhere/City")
    assert code == 1 and "unknown time zone" in out


def test_clock_command_and_locate_check(db_path):
    camera_frames(db_path, clock_minutes=-30, days=8)
    code, out = invoke("clock", "--db", db_path)
    assert code == 0, out
    assert out.startswith("clock check: the camera clock looks")
    assert "min slow" in out and "days usable" in out
    code, out = invoke("info", "--db", db_path)
    assert code == 0 and "clock check: the camera clock looks" in out
    code, out = invoke("locate", "--db", db_path, "--clock-offset", 30, "--check")
    assert code == 0 and "agrees with the sun" in out


def test_a_settings_file_chooses_the_weather_join(db_path, tmp_path):
    """The --config file's weather_station and weather_tolerance_minutes reach `weather
    import`, `fetch` and `stations` (they ignored it); --use and --tolerance win over it."""
    csv = tmp_path / "w.csv"
    csv.write_text("time,temperature_c\n2024-04-10T10:00Z,10\n2024-04-10T11:00Z,11\n")
    config = tmp_path / "s.toml"
    config.write_text('weather_station = "garden"\nweather_tolerance_minutes = 1\n')
    code, out = invoke("--config", config, "weather", "import", csv, "--db", db_path)
    assert code == 0, out
    assert "1 station(s) (garden 2)" in out  # a file without a station column: named by it
    code, out = invoke("weather", "stations", "--db", db_path)
    assert code == 0 and "station garden within 1 min" in out
    code, out = invoke(
        "--config", config, "weather", "stations", "--db", db_path, "--tolerance", 90
    )
    assert code == 0 and "station garden within 90 min" in out
    code, out = invoke("--config", config, "weather", "stations", "--db", db_path)
    assert code == 0 and "station garden within 1 min" in out
    config.write_text('weather_station = "nosuch"\nweather_tolerance_minutes = 1\n')
    code, out = invoke("--config", config, "weather", "stations", "--db", db_path)
    assert code == 1
    assert out == f"error: no weather station 'nosuch' in {db_path}; stations: garden\n"
    code, out = invoke(
        "--config", config, "weather", "stations", "--db", db_path, "--use", "garden"
    )
    assert code == 0 and "* garden" in out


def test_weather_fetch_takes_the_place_from_a_settings_file(db_path, tmp_path):
    add_frames(db_path, ["2024-04-02 10:00"], ["2024-04-02T10:00Z"])
    config = tmp_path / "s.toml"
    config.write_text("lat = 51.454\nlon = -0.978\nweather_tolerance_minutes = 30\n")
    with Archive() as archive:
        code, out = invoke(
            "--config", config, "weather", "fetch", "--db", db_path, "--url", archive.url
        )
    assert code == 0, out
    assert "added 24" in out and "open-meteo:51.45,-0.98 24" in out
    code, out = invoke("weather", "stations", "--db", db_path)
    assert code == 0 and "within 30 min" in out
