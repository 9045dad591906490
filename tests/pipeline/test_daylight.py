"""Time zones across DST changes, sun elevation against astral, day/twilight/night, recompute."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from astral import Observer
from astral.sun import azimuth as astral_azimuth
from astral.sun import elevation as astral_elevation

from pipeline import daylight
from pipeline.daylight import classify, sun_elevation, sun_position, to_utc
from pipeline.errors import InputError
from pipeline.info import describe_store
from pipeline.ingest import ingest_folder
from pipeline.settings import Settings
from tests.conftest import write_jpeg

BERLIN = "Europe/Berlin"


def _utc(values) -> list[str]:
    return [f"{v:%Y-%m-%d %H:%M}" for v in values]


def test_fall_back_hour_is_resolved_by_frame_order():
    # 2023-10-29: at 03:00 CEST the clocks go back to 02:00 CET; a frame every 20 minutes
    first = [datetime(2023, 10, 29, 1, 40) + timedelta(minutes=20 * i) for i in range(4)]
    second = [datetime(2023, 10, 29, 2, 0) + timedelta(minutes=20 * i) for i in range(4)]
    utc, offsets, n_ambiguous, n_missing = to_utc(first + second, BERLIN)
    assert _utc(utc) == [
        "2023-10-28 23:40",
        "2023-10-29 00:00",
        "2023-10-29 00:20",
        "2023-10-29 00:40",
        "2023-10-29 01:00",
        "2023-10-29 01:20",
        "2023-10-29 01:40",
        "2023-10-29 02:00",
    ]
    assert list(offsets) == [120, 120, 120, 120, 60, 60, 60, 60]
    assert (n_ambiguous, n_missing) == (6, 0)
    assert utc.is_monotonic_increasing


def test_fall_back_hour_sorted_by_wall_clock_still_pairs_up():
    local = [
        datetime(2023, 10, 29, 2, 0),
        datetime(2023, 10, 29, 2, 0),
        datetime(2023, 10, 29, 2, 30),
        datetime(2023, 10, 29, 2, 30),
    ]
    utc, offsets, n_ambiguous, _ = to_utc(local, BERLIN)
    assert _utc(utc) == [
        "2023-10-29 00:00",
        "2023-10-29 01:00",
        "2023-10-29 00:30",
        "2023-10-29 01:30",
    ]
    assert n_ambiguous == 4


def test_spring_forward_gap_is_shifted_forward_and_counted():
    # 2023-03-26: at 02:00 CET the clocks jump to 03:00 CEST; 02:30 does not exist
    local = [
        datetime(2023, 3, 26, 1, 30),
        datetime(2023, 3, 26, 2, 30),
        datetime(2023, 3, 26, 3, 30),
    ]
    utc, offsets, n_ambiguous, n_missing = to_utc(local, BERLIN)
    assert _utc(utc) == ["2023-03-26 00:30", "2023-03-26 01:30", "2023-03-26 01:30"]
    assert list(offsets) == [60, 60, 120]
    assert (n_ambiguous, n_missing) == (0, 1)


def test_no_timezone_means_utc_and_nat_passes_through():
    utc, offsets, a, m = to_utc([datetime(2024, 1, 1, 12), None], None)
    assert _utc(utc[:1]) == ["2024-01-01 12:00"] and pd.isna(utc[1])
    assert list(offsets) == [0, 0] and (a, m) == (0, 0)
    utc, offsets, _, _ = to_utc([datetime(2024, 7, 1, 12), None], "America/New_York")
    assert _utc(utc[:1]) == ["2024-07-01 16:00"] and pd.isna(utc[1])
    assert list(offsets) == [-240, 0]


def test_unknown_zone_and_bad_coordinates_are_input_errors():
    with pytest.raises(InputError, match="unknown time zone 'Mars/Olympus'"):
        to_utc([datetime(2024, 1, 1)], "Mars/Olympus")
    with pytest.raises(InputError, match="both --lat and --lon"):
        daylight.check_place(Settings(lat=50.0))
    with pytest.raises(InputError, match="outside -90..90"):
        daylight.check_place(Settings(lat=95.0, lon=0.0))


@pytest.mark.parametrize(
    "lat, lon", [(52.52, 13.40), (-33.87, 151.21), (64.1, -21.9), (0.0, -170.0)]
)
def test_sun_elevation_matches_astral(lat, lon):
    rng = np.random.default_rng(int(abs(lat * 100)))
    when = pd.to_datetime(rng.integers(1_400_000_000, 1_800_000_000, 200), unit="s", utc=True)
    ours = sun_elevation(when, lat, lon)
    reference = np.array([astral_elevation(Observer(lat, lon), t.to_pydatetime()) for t in when])
    assert np.abs(ours - reference).max() < 0.01


@pytest.mark.parametrize(
    "lat, lon", [(52.52, 13.40), (-33.87, 151.21), (64.1, -21.9), (49.28, -123.16)]
)
def test_sun_azimuth_matches_astral(lat, lon):
    rng = np.random.default_rng(int(abs(lon * 100)))
    when = pd.to_datetime(rng.integers(1_400_000_000, 1_800_000_000, 200), unit="s", utc=True)
    elevation, azimuth = sun_position(when, lat, lon)
    observer = Observer(lat, lon)
    reference = np.array([astral_azimuth(observer, t.to_pydatetime()) for t in when])
    gap = np.abs((azimuth - reference + 180) % 360 - 180)
    assert gap.max() < 0.05
    np.testing.assert_array_equal(elevation, sun_elevation(when, lat, lon))
    assert np.isnan(sun_position(pd.DatetimeIndex([pd.NaT], tz="UTC"), lat, lon)[1]).all()


def test_classify_by_sun_and_by_brightness():
    settings = Settings()
    labels, source = classify(np.array([10.0, 0.0, -3.0, -6.0, -20.0, np.nan]), None, settings)
    assert source == "sun"
    assert list(labels) == ["day", "twilight", "twilight", "night", "night", None]
    labels, source = classify(None, [120.0, 80.0, 60.0, 40.0, 10.0], settings)
    assert source == "brightness"
    assert list(labels) == ["day", "twilight", "twilight", "twilight", "night"]


def test_the_cameras_own_day_without_a_place():
    """Without a place, `day_min_luma` alone for a camera bright by day; for one whose scene is
    dark by day, DAY_SHARE of its bright frames at the hours it is that bright as a rule, never
    under `night_max_luma`; nothing for a store too small to say."""
    settings = Settings()
    n = daylight.MIN_BRIGHTNESS_FRAMES
    morning = pd.date_range("2020-02-01 08:00", periods=100, freq="min")  # hours 8 and 9
    bright = np.linspace(10, 170, 100)  # its 90th percentile ~154: 0.6 of it is over 80
    assert daylight.day_luma(bright, morning, settings) is None
    dark = np.r_[np.linspace(65, 80, 40), np.linspace(80, 110, 60)]  # a dark slope by day
    day = daylight.day_luma(dark, morning, settings)
    assert day.floor == pytest.approx(0.6 * np.quantile(dark, 0.9), abs=1e-3)
    assert 60 < day.floor < 65 and day.hours == (8, 9)
    hours = np.array([8, 8, 8, 2])
    labels, _ = classify(None, [70.0, 50.0, 30.0, 70.0], settings, day, hours)
    assert list(labels) == ["day", "twilight", "night", "twilight"]  # 02:00 is not its day
    assert daylight.day_luma(np.full(n, 30.0), morning[:n], settings) is None  # 40 is not lit
    assert daylight.day_luma(dark[: n - 1], morning[: n - 1], settings) is None
    assert daylight.day_luma(dark, [pd.NaT] * 100, settings) is None  # no hour to say it at
    assert daylight.DayLuma.from_json(day.to_json()) == day


def test_ingest_without_a_place_calls_a_dark_scenes_clear_frames_day(tmp_path, db_path):
    """Without a place, daylight comes from brightness and the camera's own day: a dark scene's
    clear mornings (luma ~70) are day once the archive shows its mornings are as a rule
    brighter (foggy ones, ~100), frames ingested before are classified again, a room lit at
    night as brightly stays twilight (its nights are dark as a rule), and a later ingest that
    does not change the camera's day changes nothing."""
    folder = tmp_path / "frames"
    start = datetime(2020, 2, 1, 8, 0)
    for i in range(40):  # clear mornings over a dark slope
        write_jpeg(folder / f"a{i:03d}.jpg", when=start + timedelta(minutes=i), colour=(70,) * 3)
    settings = Settings(workers=1)
    ingest_folder(folder, db_path, settings, progress=False)
    first = _frames(db_path)
    assert set(first["daylight"]) == {"twilight"}  # too few frames for a day of its own
    for i in range(60):  # foggy mornings: the camera's bright frames
        when = start + timedelta(days=1, minutes=i)
        write_jpeg(folder / f"b{i:03d}.jpg", when=when, colour=(100,) * 3, seed=i)
    for i in range(35):  # nights, dark but for a light switched on at 02:30
        when = start + timedelta(days=1, hours=18, minutes=i)
        write_jpeg(folder / f"n{i:03d}.jpg", when=when, colour=(70 if i >= 30 else 10,) * 3)
    ingest_folder(folder, db_path, settings, progress=False)
    second = _frames(db_path).set_index("path")
    assert set(second["daylight_source"]) == {"brightness"}
    assert (second.loc[second.index.str[0].isin(["a", "b"]), "daylight"] == "day").all()
    nights = second.loc[second.index.str[0] == "n", "daylight"]
    assert list(nights.value_counts().sort_index().items()) == [("night", 30), ("twilight", 5)]
    with duckdb.connect(str(db_path), read_only=True) as con:
        stored = con.sql("SELECT value FROM settings WHERE key = 'day_luma'").fetchall()
    day = daylight.DayLuma.from_json(json.loads(stored[0][0]))
    assert 55 < day.floor < 65 and day.hours == (8,)
    text = describe_store(db_path)
    assert "location not set" in text
    assert "day and night: by each frame's brightness (no time zone to place the sun" in text
    assert f"its own day: day above a mean luma of {day.floor:.0f} at 08 h of its clock" in text
    assert not daylight.settle_day_luma(db_path, settings)  # nothing changed it since
    write_jpeg(folder / "c000.jpg", when=start + timedelta(days=2), colour=(20,) * 3)
    ingest_folder(folder, db_path, settings, progress=False)
    third = _frames(db_path).set_index("path")
    assert (
        third.loc["c000.jpg", "daylight"] == "night" and (third["daylight"] == "day").sum() == 100
    )


def _frames(db):
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(
            "SELECT path, taken_at, taken_at_utc, utc_offset_min, sun_elevation, "
            "daylight, daylight_source FROM frames ORDER BY path"
        ).df()


def test_recompute_applies_a_place_given_later(tmp_path, db_path):
    folder = tmp_path / "frames"
    write_jpeg(folder / "noon.jpg", when=datetime(2024, 6, 21, 13, 0), colour=(20, 20, 20))
    write_jpeg(folder / "midnight.jpg", when=datetime(2024, 6, 21, 23, 59), colour=(200, 200, 200))
    settings = Settings(workers=1)
    ingest_folder(folder, db_path, settings, progress=False)
    before = _frames(db_path)
    # no place: the clock is UTC and daylight comes from brightness (so it is wrong here)
    assert list(before["daylight_source"]) == ["brightness", "brightness"]
    assert list(before["daylight"]) == ["day", "night"]
    assert list(before["utc_offset_min"]) == [0, 0]

    report = daylight.recompute(db_path, Settings(timezone=BERLIN, lat=52.52, lon=13.40))
    assert report["n_frames"] == 2 and report["timezone"] == BERLIN
    after = _frames(db_path)
    assert list(after["daylight_source"]) == ["sun", "sun"]
    assert list(after["daylight"]) == ["night", "day"]
    assert _utc(after["taken_at_utc"]) == ["2024-06-21 21:59", "2024-06-21 11:00"]
    assert list(after["utc_offset_min"]) == [120, 120]
    assert after["sun_elevation"].iloc[1] == pytest.approx(60.4, abs=0.5)

    # the place is remembered: a later recompute without flags keeps it, a clock offset moves UTC
    report = daylight.recompute(db_path, Settings(clock_offset_minutes=-30))
    assert report["timezone"] == BERLIN and report["clock_offset_minutes"] == -30
    shifted = _frames(db_path)
    assert _utc(shifted["taken_at_utc"]) == ["2024-06-21 21:29", "2024-06-21 10:30"]
    assert list(shifted["taken_at"]) == list(after["taken_at"])  # camera wall clock unchanged


def test_an_ingest_that_would_place_new_frames_elsewhere_stops_and_names_locate(tmp_path, db_path):
    first, second = tmp_path / "card1", tmp_path / "card2"
    write_jpeg(first / "a.jpg", when=datetime(2024, 6, 21, 12, 0))
    write_jpeg(second / "a.jpg", when=datetime(2024, 6, 22, 12, 0))
    ingest_folder(first, db_path, Settings(workers=1, timezone=BERLIN), progress=False)

    with pytest.raises(InputError) as raised:
        ingest_folder(
            second, db_path, Settings(workers=1, timezone="America/New_York"), progress=False
        )
    message = str(raised.value)
    assert f"timezone {BERLIN}" in message and "--timezone America/New_York" in message
    assert f"python -m pipeline locate --db {db_path} --timezone America/New_York" in message
    # nothing changed: the place, and the frames (the second card's was not added)
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert daylight.stored_place(con).timezone == BERLIN
    assert _utc(_frames(db_path)["taken_at_utc"]) == ["2024-06-21 10:00"]

    # the same place again, or none, adds the second card on the store's clock
    ingest_folder(second, db_path, Settings(workers=1), progress=False)
    assert _utc(_frames(db_path)["taken_at_utc"]) == ["2024-06-21 10:00", "2024-06-22 10:00"]
    ingest_folder(second, db_path, Settings(workers=1, timezone=BERLIN), progress=False)

    # a location where the frames had none is another sun for the new frames: stopped too
    with pytest.raises(InputError, match=r"lat none, lon none; this ingest gives --lat 52.5"):
        ingest_folder(first, db_path, Settings(workers=1, lat=52.5, lon=13.4), progress=False)
    # locate moves every frame, and ingest then takes the new place as the store's
    daylight.recompute(db_path, Settings(timezone="America/New_York", lat=40.7, lon=-74.0))
    ingest_folder(second, db_path, Settings(workers=1, timezone="America/New_York"), progress=False)
    assert _utc(_frames(db_path)["taken_at_utc"]) == ["2024-06-21 16:00", "2024-06-22 16:00"]


def test_exif_offset_wins_over_the_timezone(tmp_path, db_path):
    folder = tmp_path / "frames"
    write_jpeg(folder / "a.jpg", when=datetime(2024, 6, 1, 12, 0), offset="-04:00")
    ingest_folder(folder, db_path, Settings(workers=1, timezone=BERLIN), progress=False)
    frames = _frames(db_path)
    assert _utc(frames["taken_at_utc"]) == ["2024-06-01 16:00"]
    assert list(frames["utc_offset_min"]) == [-240]


def test_epoch_names_keep_their_instant_and_get_a_local_wall_clock(tmp_path, db_path):
    folder = tmp_path / "frames"
    write_jpeg(folder / "pic_1719835200.jpg")  # 2024-07-01 12:00 UTC, no EXIF date
    ingest_folder(folder, db_path, Settings(workers=1, timezone=BERLIN), progress=False)
    frames = _frames(db_path)
    assert _utc(frames["taken_at_utc"]) == ["2024-07-01 12:00"]
    assert _utc(frames["taken_at"]) == ["2024-07-01 14:00"]
    daylight.recompute(db_path, Settings(timezone="America/New_York"))
    frames = _frames(db_path)
    assert _utc(frames["taken_at_utc"]) == ["2024-07-01 12:00"]
    assert _utc(frames["taken_at"]) == ["2024-07-01 08:00"]


def test_ingest_over_a_fall_back_night_orders_the_repeated_hour(tmp_path, db_path):
    folder = tmp_path / "frames"
    start = datetime(2023, 10, 29, 1, 30)
    times = [start + timedelta(minutes=30 * i) for i in range(3)]  # 01:30 02:00 02:30
    times += [
        datetime(2023, 10, 29, 2, 0),
        datetime(2023, 10, 29, 2, 30),  # again, in CET
        datetime(2023, 10, 29, 3, 0),
    ]
    for i, when in enumerate(times):
        write_jpeg(folder / f"frame_{i:04d}.jpg", when=when, seed=i)
    summary = ingest_folder(
        folder, db_path, Settings(workers=1, timezone=BERLIN, ingest_batch_size=2), progress=False
    )
    assert summary.n_ambiguous == 4 and summary.n_missing == 0
    frames = _frames(db_path)
    assert _utc(frames["taken_at_utc"]) == [
        "2023-10-28 23:30",
        "2023-10-29 00:00",
        "2023-10-29 00:30",
        "2023-10-29 01:00",
        "2023-10-29 01:30",
        "2023-10-29 02:00",
    ]


def test_sun_declination_is_astrals_at_noon_of_each_date_and_nan_without_a_time():
    """The declination needs no place: astral's at noon UTC of the frame's date, whatever its
    hour; about +23.4 at the June solstice, -23.4 at December's, 0 at the equinox."""
    import datetime as dt

    from astral import sun as astral_sun

    from pipeline.daylight import sun_declination

    times = np.array(
        ["2024-06-20T23:59", "2024-06-20T00:01", "2024-12-21T07:00", "2024-03-20T12:00", "NaT"],
        dtype="datetime64[ns]",
    )
    got = sun_declination(times)
    noon = dt.datetime(2024, 6, 20, 12, tzinfo=dt.timezone.utc)
    jc = (noon.timestamp() / 86400.0 + 2440587.5 - 2451545.0) / 36525.0
    assert got[0] == got[1] == astral_sun.sun_declination(jc)
    assert got[0] > 23.3 and got[2] < -23.3 and abs(got[3]) < 0.5
    assert np.isnan(got[4])


def test_a_time_zone_is_placed_where_the_tz_database_places_it():
    """The tz database's own coordinates (zone.tab, ISO 6709, minutes and seconds, both signs);
    a link (a zone of the same rules byte for byte) is placed as its zone; UTC nowhere."""
    amsterdam = daylight.zone_place("Europe/Amsterdam")  # +5222+00454: only in zone.tab
    assert (amsterdam.lat, amsterdam.lon) == pytest.approx((52 + 22 / 60, 4 + 54 / 60))
    new_york = daylight.zone_place("America/New_York")  # +404251-0740023
    assert (new_york.lat, new_york.lon) == pytest.approx(
        (40 + 42 / 60 + 51 / 3600, -(74 + 0 / 60 + 23 / 3600))
    )
    sydney = daylight.zone_place("Australia/Sydney")  # -3352+15113
    assert (sydney.lat, sydney.lon) == pytest.approx((-(33 + 52 / 60), 151 + 13 / 60))
    assert daylight.zone_place("US/Eastern") == new_york
    assert daylight.zone_place("Asia/Calcutta").name == "Asia/Kolkata"
    assert daylight.zone_place("UTC") is None and daylight.zone_place("Etc/GMT+5") is None


def _night_and_noon(folder, n: int = 6) -> None:
    """A roof camera's July: noon frames (luma ~150) and frames at 02:00 as bright as a grey
    day (~110: the camera turns its gain up), named by their local time."""
    for i in range(n):
        day = datetime(2017, 7, 10 + i)
        write_jpeg(folder / f"{day:%Y-%m-%d}_12-00.jpg", colour=(150,) * 3, seed=i)
        write_jpeg(folder / f"{day:%Y-%m-%d}_02-00.jpg", colour=(110,) * 3, seed=100 + i)


def test_with_a_time_zone_alone_the_sun_at_its_place_tells_a_bright_night(tmp_path, db_path):
    """No --lat/--lon but a time zone: day and night come from the sun at the zone's own
    place, so a night frame as bright as a grey day is night (by brightness it was day); the
    camera's own sun elevation stays unknown (NULL), and `info` says how day was told."""
    folder = tmp_path / "frames"
    _night_and_noon(folder)
    ingest_folder(folder, db_path, Settings(workers=1, timezone="Europe/Amsterdam"), progress=False)
    frames = _frames(db_path).set_index("path")
    assert set(frames["daylight_source"]) == {"timezone"}
    assert set(frames.loc[frames.index.str.contains("_02-00"), "daylight"]) == {"night"}
    assert set(frames.loc[frames.index.str.contains("_12-00"), "daylight"]) == {"day"}
    assert frames["sun_elevation"].isna().all()
    text = describe_store(db_path)
    assert "location not set" in text
    assert "by the sun at the time zone's own place (Europe/Amsterdam, 52.37, 4.90" in text


def test_a_camera_lit_by_its_own_lights_tells_day_by_brightness_and_keeps_it(tmp_path, db_path):
    """`--daylight-from brightness` (an aquarium, a grow tent): its bright frames at 02:00 are
    day. The store remembers the choice: a later ingest without the flag keeps it, one that
    gives the other stops and names `locate`, and `locate --daylight-from sun` switches back."""
    folder = tmp_path / "frames"
    _night_and_noon(folder, n=3)
    lit = Settings(workers=1, timezone="Europe/Amsterdam", daylight_from="brightness")
    ingest_folder(folder, db_path, lit, progress=False)
    frames = _frames(db_path)
    assert set(frames["daylight_source"]) == {"brightness"} and set(frames["daylight"]) == {"day"}
    assert "by each frame's brightness (--daylight-from brightness" in describe_store(db_path)

    _night_and_noon(tmp_path / "more", n=5)  # a second card, no flags: the store's choice
    ingest_folder(tmp_path / "more", db_path, Settings(workers=1), progress=False)
    assert set(_frames(db_path)["daylight"]) == {"day"}
    with pytest.raises(InputError, match="locate --db .* --daylight-from sun"):
        ingest_folder(folder, db_path, Settings(workers=1, daylight_from="sun"), progress=False)

    report = daylight.recompute(db_path, Settings(daylight_from="sun"))
    assert report["daylight"] == {"day": 8, "night": 8}
    assert report["daylight_by"].startswith("the sun at the time zone's own place")
    assert set(_frames(db_path)["daylight_source"]) == {"timezone"}


def test_daylight_from_takes_sun_or_brightness():
    with pytest.raises(
        InputError, match="daylight_from must be one of sun, brightness, not 'lamp'"
    ):
        Settings(daylight_from="lamp")
