"""Weather import: the real NYC table, Open-Meteo and Meteostat layouts, units, bad values, rules;
`;` and tab files with decimal commas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import store
from pipeline import weather
from pipeline.errors import InputError, WeatherError
from store import weather as store_weather


def f_to_c(f: float) -> float:
    return (f - 32.0) * 5.0 / 9.0


@pytest.fixture(scope="module")
def nyc_store(nyc_weather, tmp_path_factory) -> tuple[Path, weather.WeatherImportSummary]:
    db = tmp_path_factory.mktemp("nyc") / "nyc.duckdb"
    return db, weather.import_csv(nyc_weather, db)


def _row(db: Path, station: str, when: str) -> dict:
    with store.connect(db, read_only=True) as con:
        obs = store_weather.observations(con, station)
    row = obs[obs["observed_at"] == pd.Timestamp(when)]
    assert len(row) == 1, f"no single {station} row at {when}"
    return row.iloc[0].to_dict()


# --- the real NYC airports table ---------------------------------------------------------------


def test_nyc_three_stations_and_row_counts(nyc_store):
    db, summary = nyc_store
    assert summary.format == "generic"
    assert summary.n_rows == 26115
    assert summary.stations == {"EWR": 8703, "JFK": 8706, "LGA": 8706}
    assert summary.n_added == 26115 and summary.n_duplicates == 0
    with store.connect(db, read_only=True) as con:
        assert store_weather.station_counts(con) == {"EWR": 8703, "JFK": 8706, "LGA": 8706}
    assert summary.columns["time"] == "time_hour" and summary.columns["station"] == "origin"
    assert summary.units == {
        "temperature_c": "f",
        "precipitation_mm": "in",
        "wind_speed_ms": "mph",
        "visibility_km": "mi",
    }
    assert any("guessed US" in note for note in summary.notes)


def test_nyc_values_converted_to_si_by_hand(nyc_store):
    db, _ = nyc_store
    # line 2: EWR,2013,1,1,1,39.02,...,270,10.35702,NA,0,1012,10,2013-01-01T06:00:00Z
    first = _row(db, "EWR", "2013-01-01T06:00:00Z")
    assert first["temperature_c"] == pytest.approx(3.9, abs=1e-9)
    assert first["wind_speed_ms"] == pytest.approx(10.35702 * 0.44704, rel=1e-9)
    assert first["precipitation_mm"] == 0.0
    assert first["visibility_km"] == pytest.approx(16.09344)
    assert np.isnan(first["cloud_cover_pct"])
    assert first["condition"] == "dry"
    assert first["source"] == "generic:nyc-airports-2013-hourly.csv"
    # line 363: 33.08 F, 0.13 in of precipitation -> snow (0.6 C)
    snow = _row(db, "EWR", "2013-01-16T08:00:00Z")
    assert snow["temperature_c"] == pytest.approx(f_to_c(33.08))
    assert snow["precipitation_mm"] == pytest.approx(0.13 * 25.4)
    assert snow["condition"] == "snow"
    # line 723: 62.06 F, 0.19 in -> rain
    rain = _row(db, "EWR", "2013-01-31T08:00:00Z")
    assert rain["precipitation_mm"] == pytest.approx(4.826)
    assert rain["condition"] == "rain"
    # line 288: visibility 0.25 mi, dry -> fog
    fog = _row(db, "EWR", "2013-01-13T05:00:00Z")
    assert fog["visibility_km"] == pytest.approx(0.402336)
    assert fog["condition"] == "fog"


def test_nyc_bad_wind_reported_with_its_line_and_nulled(nyc_store):
    db, summary = nyc_store
    assert summary.rejected_rows == []
    assert len(summary.rejected_fields) == 1
    bad = summary.rejected_fields[0]
    assert (bad.line, bad.column, bad.value) == (1011, "wind_speed", "1048.36058")
    assert "impossible" in bad.reason
    assert "line 1011 wind_speed '1048.36058'" in summary.describe()
    row = _row(db, "EWR", "2013-02-12T08:00:00Z")
    assert np.isnan(row["wind_speed_ms"])  # only the bad field is nulled
    assert row["temperature_c"] == pytest.approx(f_to_c(39.02))


def test_nyc_missing_markers_are_missing_not_errors(nyc_store):
    db, _ = nyc_store
    # EWR 2013-08-22 09:00 local has NA temperature: stored as NULL, not reported
    row = _row(db, "EWR", "2013-08-22T13:00:00Z")
    assert np.isnan(row["temperature_c"])
    assert row["precipitation_mm"] == pytest.approx(0.13 * 25.4)


def test_reimport_adds_nothing(nyc_weather, nyc_store):
    db, _ = nyc_store
    again = weather.import_csv(nyc_weather, db)
    assert again.n_added == 0 and again.n_duplicates == 26115
    with store.connect(db, read_only=True) as con:
        assert sum(store_weather.station_counts(con).values()) == 26115


def test_station_option_keeps_one_station(nyc_weather, tmp_path):
    db = tmp_path / "s.duckdb"
    summary = weather.import_csv(nyc_weather, db, station="LGA")
    assert summary.stations == {"LGA": 8706}
    with pytest.raises(InputError, match="station 'XYZ' is not in"):
        weather.import_csv(nyc_weather, db, station="XYZ")


def test_layouts_are_tried_in_their_documented_order_and_generic_last():
    from pipeline.weather import layouts

    names = [layout.name for layout in layouts.LAYOUTS]
    assert names == ["open-meteo", "environment-canada", "meteostat-bulk", "meteostat", "generic"]
    listed = [layouts.__doc__.index(f"**{name}**") for name in names]
    assert listed == sorted(listed)  # the module docstring gives the same order


def test_units_si_overrides_the_guess(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("time,temp,wind\n2024-01-01T00:00Z,70,5\n")
    frame, summary = weather.read_csv(path)
    assert summary.units["temperature_c"] == "f"
    frame, summary = weather.read_csv(path, units="si")
    # 70 C is impossible: nulled and reported
    assert np.isnan(frame.loc[0, "temperature_c"])
    assert summary.rejected_fields[0].line == 2
    assert frame.loc[0, "wind_speed_ms"] == 5.0


# --- Open-Meteo CSV export -----------------------------------------------------------------------

OPEN_METEO_GMT = """latitude,longitude,elevation,utc_offset_seconds,timezone,timezone_abbreviation
51.46,-0.98,58.0,0,GMT,GMT

time,temperature_2m (°C),precipitation (mm),weather_code (wmo code),cloud_cover (%),wind_speed_10m (km/h)
2024-04-02T00:00,8.1,0.00,0,5,7.2
2024-04-02T01:00,7.9,0.40,61,100,10.8
2024-04-02T02:00,7.5,0.00,45,100,3.6
2024-04-02T03:00,-0.5,1.20,73,100,14.4
2024-04-02T04:00,6.0,0.00,95,100,36.0
2024-04-02T05:00,abc,0.00,3,80,3.6
2024-04-02T06:00,6.5,,,,
"""


def test_open_meteo_export_layout(tmp_path):
    path = tmp_path / "open-meteo-51.46N0.98W58m.csv"
    path.write_text(OPEN_METEO_GMT, encoding="utf-8")
    db = tmp_path / "om.duckdb"
    summary = weather.import_csv(path, db)
    assert summary.format == "open-meteo"
    assert summary.stations == {"open-meteo:51.46,-0.98": 7}
    assert summary.units["wind_speed_ms"] == "kmh"
    with store.connect(db, read_only=True) as con:
        obs = store_weather.observations(con)
    assert list(obs["observed_at"].dt.hour) == [0, 1, 2, 3, 4, 5, 6]
    assert str(obs["observed_at"].dt.tz) == "UTC"
    assert list(obs["condition"].fillna("-")) == [
        "clear",
        "rain",
        "fog",
        "snow",
        "rain",
        "cloudy",
        "-",
    ]
    assert list(obs["weather_code"].fillna(-1)) == [0, 61, 45, 73, 95, 3, -1]
    assert obs.loc[1, "wind_speed_ms"] == pytest.approx(3.0)
    assert obs.loc[1, "precipitation_mm"] == pytest.approx(0.4)
    # text in a number column: nulled and reported with the file line (header block = 4 lines)
    assert [(r.line, r.column, r.value) for r in summary.rejected_fields] == [
        (10, "temperature_2m (°C)", "abc")
    ]
    assert np.isnan(obs.loc[5, "temperature_c"]) and obs.loc[5, "cloud_cover_pct"] == 80


def test_open_meteo_local_timezone_header_follows_dst(tmp_path):
    text = (
        "latitude,longitude,elevation,utc_offset_seconds,timezone,timezone_abbreviation\n"
        "52.52,13.419998,38.0,7200,Europe/Berlin,GMT+2\n\n"
        "time,temperature_2m (°C),precipitation (mm)\n"
        "2024-10-27T01:00,9.0,0\n2024-10-27T02:00,9.1,0\n2024-10-27T02:00,9.2,0\n"
        "2024-10-27T03:00,9.3,0\n2024-03-31T01:00,1.0,0\n2024-03-31T03:00,2.0,0\n"
    )
    path = tmp_path / "berlin.csv"
    path.write_text(text, encoding="utf-8")
    frame, summary = weather.read_csv(path)
    assert summary.stations == {"open-meteo:52.52,13.42": 6}
    assert [t.strftime("%m-%d %H:%M") for t in frame["observed_at"]] == [
        "10-26 23:00",
        "10-27 00:00",
        "10-27 01:00",
        "10-27 02:00",
        "03-31 00:00",
        "03-31 01:00",
    ]


def test_open_meteo_unix_times_and_daily_block(tmp_path):
    text = (
        "latitude,longitude,elevation,utc_offset_seconds,timezone,timezone_abbreviation\n"
        "10.0,20.0,5.0,0,GMT,GMT\n\n"
        "time,temperature_2m (°F),precipitation (inch),wind_speed_10m (mp/h)\n"
        "1711929600,50.0,0.1,10\n1711933200,51.0,0.0,11\n\n"
        "time,temperature_2m_max (°F)\n2024-04-01,60\n"
    )
    path = tmp_path / "unix.csv"
    path.write_text(text, encoding="utf-8")
    frame, summary = weather.read_csv(path)
    assert len(frame) == 2
    assert frame.loc[0, "observed_at"] == pd.Timestamp("2024-04-01T00:00Z")
    assert frame.loc[0, "temperature_c"] == pytest.approx(10.0)
    assert frame.loc[0, "precipitation_mm"] == pytest.approx(2.54)
    assert frame.loc[0, "condition"] == "rain"


def test_demo_layout_reads(tmp_path):
    """The demo renderer's weather.csv: Open-Meteo layout with GMT times."""
    text = (
        "latitude,longitude,elevation,utc_offset_seconds,timezone,timezone_abbreviation\n"
        "51.454,-0.978,60.0,0,GMT,GMT\n\n"
        "time,temperature_2m (°C),precipitation (mm),weather_code (wmo code),"
        "cloud_cover (%),wind_speed_10m (km/h)\n"
        "2024-04-02T10:00,11.2,0.0,2,55,12.0\n"
    )
    path = tmp_path / "weather.csv"
    path.write_text(text, encoding="utf-8")
    frame, summary = weather.read_csv(path)
    assert frame.loc[0, "station"] == "open-meteo:51.454,-0.978"
    assert frame.loc[0, "condition"] == "cloudy"


def _european(text: str, delimiter: str) -> str:
    """`text` as a spreadsheet with decimal commas saves it: `delimiter` between cells and a
    comma for each decimal point (the Open-Meteo texts here have no other dots or commas)."""
    return text.replace(",", delimiter).replace(".", ",")


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
def test_open_meteo_export_resaved_with_another_delimiter(tmp_path, delimiter):
    """A spreadsheet's `;` or tab re-save of an Open-Meteo export reads as the original: same
    station (from the decimal-comma lat/lon), times, values, and the same rejected value."""
    original = tmp_path / "original.csv"
    original.write_text(OPEN_METEO_GMT, encoding="utf-8")
    resaved = tmp_path / "resaved.csv"
    resaved.write_text(_european(OPEN_METEO_GMT, delimiter), encoding="utf-8")
    assert "51,46" in resaved.read_text(encoding="utf-8")
    db = tmp_path / "om.duckdb"
    summary = weather.import_csv(resaved, db)
    assert summary.format == "open-meteo"
    assert summary.stations == {"open-meteo:51.46,-0.98": 7}
    assert summary.units["wind_speed_ms"] == "kmh"
    assert [(r.line, r.column, r.value) for r in summary.rejected_fields] == [
        (10, "temperature_2m (°C)", "abc")
    ]
    with store.connect(db, read_only=True) as con:
        stored = store_weather.observations(con)
    expected, _ = weather.read_csv(original)
    columns = [c for c in store_weather.COLUMNS if c != "source"]

    def records(frame: pd.DataFrame) -> list[dict]:
        return frame[columns].astype(object).fillna(-1).to_dict("records")

    assert records(stored) == records(expected)
    assert stored.loc[1, "precipitation_mm"] == pytest.approx(0.4)
    assert stored.loc[4, "wind_speed_ms"] == pytest.approx(10.0)


def test_open_meteo_without_an_hourly_block_names_the_delimiter(tmp_path):
    path = tmp_path / "daily.csv"
    path.write_text(
        "latitude;longitude;elevation;utc_offset_seconds;timezone;timezone_abbreviation\n"
        "51,46;-0,98;58,0;0;GMT;GMT\n\ntime;temperature_2m_max (°C)\n2024-04-01;12,5\n",
        encoding="utf-8",
    )
    with pytest.raises(WeatherError) as error:
        weather.read_csv(path)
    message = str(error.value)
    assert "no hourly block after the Open-Meteo location block" in message
    assert "a header with a `time` column, then date-times" in message
    assert "cells split at ';', the delimiter of the file's first line" in message
    assert "`time,...`" not in message


# --- decimal commas and values that are not numbers ------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
def test_decimal_commas_are_numbers_where_the_delimiter_is_not_a_comma(tmp_path, delimiter):
    lines = ["time;temperature_2m (°C);precipitation (mm);wind (km/h)"]
    lines += ["2024-04-01T00:00;6,0;0,00;7,2", "2024-04-01T01:00;-0,5;1,25;10.8"]
    lines += ["2024-04-01T02:00;,5;NA;3"]
    path = tmp_path / "eu.csv"
    path.write_text("\n".join(lines).replace(";", delimiter) + "\n", encoding="utf-8")
    db = tmp_path / "eu.duckdb"
    summary = weather.import_csv(path, db)
    assert summary.rejected_fields == [] and summary.n_added == 3
    assert summary.n_decimal_commas == 6  # '10.8' and '3' are plain numbers, NA is missing
    assert "note: 6 values with a decimal comma read as numbers (6,5 = 6.5" in summary.describe()
    with store.connect(db, read_only=True) as con:
        obs = store_weather.observations(con, "eu")
    assert list(obs["temperature_c"]) == [6.0, -0.5, 0.5]
    assert list(obs["precipitation_mm"].fillna(-1)) == [0.0, 1.25, -1]
    assert list(obs["wind_speed_ms"]) == pytest.approx([2.0, 3.0, 3 / 3.6])
    assert list(obs["condition"].fillna("-")) == ["dry", "snow", "-"]  # -0.5 °C, 1.25 mm


def test_values_that_are_not_numbers_say_the_likely_cause(tmp_path):
    comma = tmp_path / "comma.csv"  # a quoted decimal comma in a ',' file is not read as one
    comma.write_text(
        'time,temp (°C),wind (km/h),visibility (km)\n2024-04-01T00:00Z,"6,5",12 km/h,9.5\n'
        "2024-04-01T01:00Z,warm,3,10\n"
    )
    frame, summary = weather.read_csv(comma)
    reasons = {(r.line, r.value): r.reason for r in summary.rejected_fields}
    assert reasons == {
        (2, "6,5"): "not a number (a decimal comma? it is read as one only in a file "
        "delimited by ';' or tab)",
        (2, "12 km/h"): "not a number (a unit in the cell? give the unit in the column name, "
        "e.g. 'temp (°C)')",
        (3, "warm"): "not a number",
    }
    assert np.isnan(frame.loc[0, "temperature_c"]) and frame.loc[0, "visibility_km"] == 9.5
    assert summary.n_decimal_commas == 0
    grouped = tmp_path / "grouped.csv"
    grouped.write_text("time;visibility (m)\n2024-04-01T00:00Z;1.234,5\n2024-04-01T01:00Z;800\n")
    frame, summary = weather.read_csv(grouped)
    assert [(r.line, r.value, r.reason) for r in summary.rejected_fields] == [
        (2, "1.234,5", "not a number (a thousands separator? write numbers without one)")
    ]
    assert frame.loc[1, "visibility_km"] == pytest.approx(0.8)


def test_a_file_with_a_header_and_no_rows_is_an_error(tmp_path):
    path = tmp_path / "header.csv"  # an export of an empty range: it used to import 0 rows, exit 0
    path.write_text("time,temp (°C),precipitation (mm)\n\n")
    with pytest.raises(WeatherError, match=r"has a header \(time, temp .*\) and no rows"):
        weather.read_csv(path)


def test_a_row_with_more_cells_than_the_header_is_skipped_not_cut_to_fit(tmp_path):
    # an unquoted decimal comma in a ',' file: `6,0` becomes two cells and every later value
    # moves one column to the right; cut to fit, 6,0 | 0.2 was stored as 6 degrees and 0 mm
    path = tmp_path / "shifted.csv"
    path.write_text(
        "time,temp (°C),precipitation (mm)\n"
        "2024-04-01T00:00Z,6,0,0.2\n"
        "2024-04-01T01:00Z,7.5,0.1\n"
        "2024-04-01T02:00Z,8.0,0.0,\n"  # a trailing delimiter: an empty cell, harmless
    )
    frame, summary = weather.read_csv(path)
    assert [(r.line, r.value, r.reason) for r in summary.rejected_rows] == [
        (
            2,
            "2024-04-01T00:00Z,6,0,0.2",
            "4 cells where the header has 3: its values are out of place (a decimal comma in "
            "a ',' file? quote such values or save with ';')",
        )
    ]
    assert list(frame["temperature_c"]) == [7.5, 8.0]
    assert list(frame["precipitation_mm"]) == [0.1, 0.0]


# --- Meteostat --------------------------------------------------------------------------------


def test_meteostat_csv_with_header(tmp_path):
    text = (
        "time,temp,dwpt,rhum,prcp,snow,wdir,wspd,wpgt,pres,tsun,coco\n"
        "2018-01-01 00:00:00,0.6,-5.4,63.0,,,340.0,18.4,,1024.6,,1.0\n"
        "2018-01-01 01:00:00,-1.1,-6.4,66.0,0.0,,320.0,16.6,,1025.4,,14.0\n"
        "2018-01-01 02:00:00,-1.1,-9.6,53.0,0.0,,330.0,22.3,,1025.8,,99.0\n"
    )
    path = tmp_path / "72219.csv"
    path.write_text(text)
    frame, summary = weather.read_csv(path)
    assert summary.format == "meteostat"
    assert summary.stations == {"meteostat:72219": 3}
    assert frame.loc[0, "wind_speed_ms"] == pytest.approx(18.4 / 3.6)
    assert list(frame["weather_code"].fillna(-1)) == [0, 71, -1]  # coco 1 -> 0, 14 -> 71
    assert list(frame["condition"].fillna("-")) == ["clear", "snow", "dry"]
    assert [(r.line, r.column) for r in summary.rejected_fields] == [(4, "coco")]


def test_meteostat_bulk_file_without_header(tmp_path):
    text = (
        "2020-01-01,0,5.0,2.0,80,0.5,,200,10.8,,1010.0,,8\n"
        "2020-01-01,1,5.2,2.0,80,0.0,,200,7.2,,1010.0,,\n"
    )
    path = tmp_path / "10637.csv"
    path.write_text(text)
    frame, summary = weather.read_csv(path)
    assert summary.format == "meteostat"
    assert list(frame["observed_at"]) == [
        pd.Timestamp("2020-01-01T00:00Z"),
        pd.Timestamp("2020-01-01T01:00Z"),
    ]
    assert frame.loc[0, "weather_code"] == 63 and frame.loc[0, "condition"] == "rain"
    assert frame.loc[1, "condition"] == "dry"


def test_meteostat_bulk_file_with_semicolons(tmp_path):
    path = tmp_path / "10637.csv"
    path.write_text(
        "2020-01-01;0;5,0;2,0;80;0,5;;200;10,8;;1010,0;;8\n"
        "2020-01-01;1;5,2;2,0;80;0,0;;200;7,2;;1010,0;;\n"
    )
    frame, summary = weather.read_csv(path)
    assert summary.format == "meteostat" and summary.rejected_fields == []
    assert list(frame["temperature_c"]) == [5.0, 5.2]
    assert list(frame["wind_speed_ms"]) == pytest.approx([3.0, 2.0])
    assert frame.loc[0, "weather_code"] == 63 and frame.loc[0, "condition"] == "rain"


# --- Environment Canada --------------------------------------------------------------------------


def _environment_canada_csv(path: Path, province: str, rows: list[tuple]) -> Path:
    """A file in the layout of climate.weather.gc.ca's hourly "Download Data" CSV."""
    head = [
        ("Station Name", "VANCOUVER INTL A"),
        ("Province", province),
        ("Latitude", "49.19"),
        ("Longitude", "-123.18"),
        ("Elevation", "4.30"),
        ("Climate Identifier", "1108395"),
        ("WMO Identifier", "71892"),
        ("TC Identifier", "YVR"),
    ]
    columns = [
        "Date/Time",
        "Year",
        "Month",
        "Day",
        "Time",
        "Data Quality",
        "Temp (°C)",
        "Temp Flag",
        "Dew Point Temp (°C)",
        "Dew Point Temp Flag",
        "Rel Hum (%)",
        "Rel Hum Flag",
        "Wind Dir (10s deg)",
        "Wind Dir Flag",
        "Wind Spd (km/h)",
        "Wind Spd Flag",
        "Visibility (km)",
        "Visibility Flag",
        "Stn Press (kPa)",
        "Stn Press Flag",
        "Hmdx",
        "Hmdx Flag",
        "Wind Chill",
        "Wind Chill Flag",
        "Weather",
    ]

    def line(cells) -> str:
        return ",".join(f'"{cell}"' for cell in cells)

    lines = [line(pair) for pair in head]
    lines += [
        '"All times are specified in Local Standard Time (LST). Add 1 hour to adjust for '
        'Daylight Saving Time where and when it is observed."',
        "",
        '"Legend"',
        line(("E", "Estimated")),
        line(("M", "Missing")),
        line(("NA", "Not Available")),
        "",
        line(columns),
    ]
    for when, temp, flag, wind, visibility, weather_text in rows:
        date, time = when.split(" ")
        year, month, day = date.split("-")
        lines.append(
            line(
                (
                    when,
                    year,
                    month,
                    day,
                    time,
                    "‡",
                    temp,
                    flag,
                    "7.0",
                    "",
                    "80",
                    "",
                    "27",
                    "",
                    wind,
                    "",
                    visibility,
                    "",
                    "101.30",
                    "",
                    "",
                    "",
                    "",
                    "",
                    weather_text,
                )
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # with a BOM, as served
    return path


def test_environment_canada_layout(tmp_path):
    path = _environment_canada_csv(
        tmp_path / "weather-51442-201607.csv",
        "BRITISH COLUMBIA",
        [
            ("2016-07-01 00:00", "14.8", "", "22", "48.3", "NA"),
            ("2016-07-01 01:00", "14.1", "", "18", "48.3", "Mostly Cloudy"),
            ("2016-07-01 02:00", "", "M", "11", "0.8", "Moderate Rain,Fog"),
            ("2017-01-15 12:00", "-1.5", "", "36", "2.4", "Snow"),
            ("2017-01-15 13:00", "-1.0", "", "36", "9.7", "Volcanic Ash"),
        ],
    )
    db = tmp_path / "ec.duckdb"
    summary = weather.import_csv(path, db)
    assert summary.format == "environment-canada"
    assert summary.stations == {"eccc:1108395": 5}
    assert summary.columns == {
        "time": "Date/Time",
        "temperature_c": "Temp (°C)",
        "wind_speed_ms": "Wind Spd (km/h)",
        "visibility_km": "Visibility (km)",
        "weather_code": "Weather",
    }
    assert any("VANCOUVER INTL A" in note and "UTC-8 all year" in note for note in summary.notes)
    assert any("'Volcanic Ash' x1" in note for note in summary.notes)
    assert not summary.rejected_fields and not summary.rejected_rows  # 'M' is just missing
    with store.connect(db, read_only=True) as con:
        obs = store_weather.observations(con)
    # Local Standard Time is UTC-8 in July as in January: no daylight saving time
    assert [t.strftime("%Y-%m-%d %H:%M") for t in obs["observed_at"]] == [
        "2016-07-01 08:00",
        "2016-07-01 09:00",
        "2016-07-01 10:00",
        "2017-01-15 20:00",
        "2017-01-15 21:00",
    ]
    assert list(obs["weather_code"].fillna(-1)) == [-1, 2, 63, 71, -1]
    assert list(obs["condition"]) == ["dry", "cloudy", "rain", "snow", "dry"]
    assert obs.loc[0, "wind_speed_ms"] == pytest.approx(22 / 3.6)
    assert obs.loc[0, "temperature_c"] == pytest.approx(14.8) and np.isnan(
        obs.loc[2, "temperature_c"]
    )
    assert set(obs["source"]) == {"environment-canada:weather-51442-201607.csv"}


def test_environment_canada_resaved_with_semicolons(tmp_path):
    path = _environment_canada_csv(
        tmp_path / "ec.csv",
        "BRITISH COLUMBIA",
        [
            ("2016-07-01 00:00", "14,8", "", "22", "48,3", "NA"),
            ("2016-07-01 02:00", "", "M", "11", "0,8", "Moderate Rain,Fog"),
        ],
    )
    text = path.read_text(encoding="utf-8-sig").replace('","', '";"')
    path.write_text(text.replace("101.30", "101,30"), encoding="utf-8-sig")
    frame, summary = weather.read_csv(path)
    assert summary.format == "environment-canada"
    assert summary.stations == {"eccc:1108395": 2} and summary.rejected_fields == []
    assert [t.strftime("%H:%M") for t in frame["observed_at"]] == ["08:00", "10:00"]
    assert frame.loc[0, "temperature_c"] == pytest.approx(14.8)
    assert list(frame["visibility_km"]) == [48.3, 0.8]
    assert list(frame["weather_code"].fillna(-1)) == [-1, 63]


def test_environment_canada_weather_words_and_other_provinces(tmp_path):
    from pipeline.weather.layouts.environment_canada import weather_code

    assert [
        weather_code(text)
        for text in (
            "Clear",
            "Mainly Clear",
            "Cloudy",
            "Fog",
            "Freezing Fog",
            "Drizzle",
            "Heavy Rain",
            "Rain Showers",
            "Heavy Rain Showers",
            "Moderate Snow",
            "Snow Showers",
            "Ice Pellets",
            "Moderate Hail",
            "Thunderstorms",
            "Rain,Snow,Fog",
            "NA",
            "Moderate Fog",
        )
    ] == [0, 1, 3, 45, 48, 51, 65, 80, 82, 73, 85, 79, 90, 95, 71, None, None]
    path = _environment_canada_csv(
        tmp_path / "regina.csv",
        "SASKATCHEWAN",
        [("2016-07-01 00:00", "20.0", "", "10", "25", "Clear")],
    )
    frame, _ = weather.read_csv(path)
    assert frame.loc[0, "observed_at"] == pd.Timestamp("2016-07-01T06:00Z")
    frame, _ = weather.read_csv(path, timezone="Etc/GMT+7")  # a station across a zone line
    assert frame.loc[0, "observed_at"] == pd.Timestamp("2016-07-01T07:00Z")
    broken = _environment_canada_csv(
        tmp_path / "nowhere.csv",
        "ATLANTIS",
        [("2016-07-01 00:00", "20.0", "", "10", "25", "Clear")],
    )
    with pytest.raises(WeatherError, match="province 'ATLANTIS' has no known standard offset"):
        weather.read_csv(broken)
    two_columns = tmp_path / "generic.csv"  # a generic table that only starts the same way
    two_columns.write_text("station_name,temp\nA,20\n")
    with pytest.raises(InputError, match="no time column"):
        weather.read_csv(two_columns)


# --- generic layouts, --columns, --timezone -------------------------------------------------------


def test_columns_override_with_units(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("when;t;gust;v;sky\n2024-05-01 12:00;20;36;9000;10\n")
    frame, summary = weather.read_csv(
        path,
        station="garden",
        columns={
            "time": "when",
            "temperature_c": "t",
            "wind_speed_ms": "gust:kmh",
            "visibility_km": "v:m",
            "cloud_cover_pct": "sky",
        },
    )
    row = frame.iloc[0]
    assert row["station"] == "garden"
    assert row["wind_speed_ms"] == pytest.approx(10.0)
    assert row["visibility_km"] == pytest.approx(9.0)
    assert row["condition"] == "clear"


def test_iem_asos_names_imply_units(tmp_path):
    path = tmp_path / "asos.csv"
    path.write_text(
        "station,valid,tmpf,sknt,p01i,vsby\n"
        "BOS,2024-01-05 12:54,30.0,10,T,0.5\n"
        "BOS,2024-01-05 13:54,M,M,0.05,M\n"
    )
    frame, summary = weather.read_csv(path)
    assert summary.units == {
        "temperature_c": "f",
        "precipitation_mm": "in",
        "wind_speed_ms": "kn",
        "visibility_km": "mi",
    }
    assert frame.loc[0, "precipitation_mm"] == 0.0  # 'T' = trace
    assert frame.loc[0, "condition"] == "fog"
    assert frame.loc[1, "condition"] == "rain"  # temperature unknown: rain


def test_naive_local_times_with_timezone_match_the_real_utc_column(nyc_weather, tmp_path):
    """NYC's local year/month/day/hour columns, read with --timezone, give its UTC time_hour."""
    table = pd.read_csv(nyc_weather)
    jfk = table[
        (table.origin == "JFK")
        & (((table.month == 11) & (table.day == 3)) | ((table.month == 3) & (table.day == 10)))
    ]
    local = pd.to_datetime(jfk[["year", "month", "day", "hour"]]).dt.strftime("%Y-%m-%d %H:%M")
    path = tmp_path / "local.csv"
    pd.DataFrame({"time": local, "temp": jfk.temp}).to_csv(path, index=False)
    frame, summary = weather.read_csv(path, station="JFK", units="us", timezone="America/New_York")
    assert summary.rejected_rows == []
    expected = pd.to_datetime(jfk.time_hour, utc=True).reset_index(drop=True)
    assert list(frame["observed_at"]) == list(expected)
    assert len(frame) == len(jfk)
    assert (local == "2013-11-03 01:00").sum() == 2 and not (local == "2013-03-10 02:00").any()


def test_time_in_dst_gap_and_bad_time_are_skipped_with_lines(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("time,temp\n2024-03-31 01:00,1\n2024-03-31 02:30,2\nyesterday,3\n")
    frame, summary = weather.read_csv(path, units="si", timezone="Europe/Berlin")
    assert len(frame) == 1
    assert [(r.line, r.value) for r in summary.rejected_rows] == [
        (3, "2024-03-31 02:30"),
        (4, "yesterday"),
    ]
    assert "skipped row" in summary.describe()


def test_repeated_rows_in_one_file_count_once(tmp_path):
    path = tmp_path / "rep.csv"
    path.write_text("time,temp\n2024-01-01T00:00Z,1\n2024-01-01T00:00Z,1\n")
    db = tmp_path / "r.duckdb"
    summary = weather.import_csv(path, db, units="si")
    assert summary.n_added == 1 and summary.n_file_duplicates == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("when,temp\n2024-01-01,1\n", "no time column"),
        ("time,foo,bar\n2024-01-01T00:00Z,1,2\n", "no weather columns recognised"),
    ],
)
def test_unusable_columns_are_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        weather.read_csv(path)


def test_unknown_column_in_mapping_lists_the_columns(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("time,temp\n2024-01-01T00:00Z,1\n")
    with pytest.raises(InputError, match="column 'tmp' .* its columns: time, temp"):
        weather.read_csv(path, columns={"temperature_c": "tmp"})
    with pytest.raises(InputError, match="unknown weather column target"):
        weather.read_csv(path, columns={"temperature": "temp"})
    with pytest.raises(InputError, match="unit 'mph' does not fit"):
        weather.read_csv(path, columns={"temperature_c": "temp:mph"})


def test_empty_and_binary_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(WeatherError, match="is empty"):
        weather.read_csv(empty)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(WeatherError, match="not a text CSV"):
        weather.read_csv(binary)


# --- condition rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, expected",
    [
        (0, "clear"),
        (1, "clear"),
        (2, "cloudy"),
        (3, "cloudy"),
        (45, "fog"),
        (48, "fog"),
        (51, "rain"),
        (61, "rain"),
        (67, "rain"),
        (71, "snow"),
        (77, "snow"),
        (80, "rain"),
        (82, "rain"),
        (85, "snow"),
        (86, "snow"),
        (95, "rain"),
        (99, "rain"),
        (5, None),
        (None, None),
    ],
)
def test_wmo_codes(code, expected):
    assert weather.condition_for_code(code) == expected


def test_measured_rules_in_order():
    frame = pd.DataFrame(
        {
            "weather_code": [np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 3.0],
            "precipitation_mm": [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, np.nan, 5.0],
            "temperature_c": [0.5, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0],
            "visibility_km": [10, 0.2, 0.5, 10, 10, np.nan, np.nan, 10],
            "cloud_cover_pct": [np.nan, 100, 100, 80, 20, np.nan, np.nan, 0],
        }
    )
    assert list(weather.derive_conditions(frame).fillna("-")) == [
        "snow",
        "rain",
        "fog",
        "cloudy",
        "clear",
        "dry",
        "-",
        "cloudy",
    ]


def test_open_meteo_several_locations(tmp_path):
    text = (
        "location_id,latitude,longitude,elevation,utc_offset_seconds,timezone,"
        "timezone_abbreviation\n0,52.52,13.42,38.0,0,GMT,GMT\n1,48.14,11.58,520.0,0,GMT,GMT\n\n"
        "location_id,time,temperature_2m (°C)\n0,2024-01-01T00:00,1.0\n"
        "1,2024-01-01T00:00,-3.0\n0,2024-01-01T01:00,1.5\n"
    )
    path = tmp_path / "two.csv"
    path.write_text(text, encoding="utf-8")
    frame, summary = weather.read_csv(path)
    assert summary.stations == {"open-meteo:52.52,13.42": 2, "open-meteo:48.14,11.58": 1}
    assert list(frame["temperature_c"]) == [1.0, -3.0, 1.5]


def test_settings_reach_the_join_only_when_given(nyc_weather, tmp_path):
    from pipeline.settings import Settings

    db = tmp_path / "s.duckdb"
    weather.import_csv(nyc_weather, db)
    weather.set_join(db, tolerance_minutes=45)
    weather.apply_settings(db, Settings())  # defaults: nothing changes
    with store.connect(db, read_only=True) as con:
        assert store_weather.tolerance_minutes(con) == 45
        assert store_weather.joined_station(con) == "JFK"  # most rows, then by name
    weather.apply_settings(db, Settings(weather_station="LGA", weather_tolerance_minutes=120))
    with store.connect(db, read_only=True) as con:
        assert store_weather.tolerance_minutes(con) == 120
        assert store_weather.joined_station(con) == "LGA"
