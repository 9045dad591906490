"""Timestamp sources and their precedence: EXIF, then file-name patterns, then mtime."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from PIL import Image

from pipeline.timestamps import (
    BadExifDate,
    date_order,
    filename_time,
    frame_time,
    parse_exif_datetime,
    parse_exif_offset,
)


def _exif(when: str | None = None, offset: str | None = None, subsec: str | None = None):
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    if when is not None:
        ifd[0x9003] = when
    if offset is not None:
        ifd[0x9011] = offset
    if subsec is not None:
        ifd[0x9291] = subsec
    return exif


def test_exif_dates_parse_with_subseconds():
    assert parse_exif_datetime("2017:04:14 08:45:49") == datetime(2017, 4, 14, 8, 45, 49)
    assert parse_exif_datetime(b"2017:04:14 08:45:49\x00", subsec="25") == datetime(
        2017, 4, 14, 8, 45, 49, 250000
    )


@pytest.mark.parametrize(
    "text",
    [
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "garbage",
        "2017:13:45 10:00:00",
        "1970:01:01 00:00:00",
        "2999:01:01 00:00:00",
    ],
)
def test_garbage_exif_dates_are_refused(text):
    with pytest.raises(BadExifDate):
        parse_exif_datetime(text)


def test_exif_offsets():
    assert parse_exif_offset("+02:00") == 120
    assert parse_exif_offset("-05:30") == -330
    assert parse_exif_offset(b"+01:00\x00") == 60
    assert parse_exif_offset("   :  ") is None
    assert parse_exif_offset("+25:00") is None
    assert parse_exif_offset(None) is None


@pytest.mark.parametrize(
    "name, expected, is_utc",
    [
        ("20220401_120000.jpg", datetime(2022, 4, 1, 12, 0, 0), False),
        ("IMG_20220401_123456_001.JPG", datetime(2022, 4, 1, 12, 34, 56), False),
        ("2022-04-01_12-00-30.jpg", datetime(2022, 4, 1, 12, 0, 30), False),
        ("cam 2022-04-01 12.00.30.png", datetime(2022, 4, 1, 12, 0, 30), False),
        ("2022_04_01_120005.jpg", datetime(2022, 4, 1, 12, 0, 5), False),
        ("20220401120007.jpg", datetime(2022, 4, 1, 12, 0, 7), False),
        ("2020-02-10-08-49.jpg", datetime(2020, 2, 10, 8, 49), False),
        ("cam_2022-04-01_12-05.jpg", datetime(2022, 4, 1, 12, 5), False),
        ("2022-04-01 12.05 (2).jpg", datetime(2022, 4, 1, 12, 5), False),
        ("2021-05-01_1230.jpg", datetime(2021, 5, 1, 12, 30), False),  # a Raspberry Pi's
        ("img_2021-05-01_0905.jpg", datetime(2021, 5, 1, 9, 5), False),
        ("pic_1492152349.jpg", datetime(2017, 4, 14, 6, 45, 49), True),
        ("closed-1-pic_1494776109.jpg", datetime(2017, 5, 14, 15, 35, 9), True),
        ("plant_1620000000.5.jpg", datetime(2021, 5, 3), True),
        ("frame-1620000000123.jpg", datetime(2021, 5, 3, 0, 0, 0, 123000), True),  # in ms
        ("site_2019_01_01_120005.jpg", datetime(2019, 1, 1, 12, 0, 5), False),  # PhenoCam's
        ("2021_05_01_1230.jpg", datetime(2021, 5, 1, 12, 30), False),
        # Hikvision's FTP uploads, to the millisecond
        (
            "10.0.0.64_01_20210501123000123_TIMING.jpg",
            datetime(2021, 5, 1, 12, 30, 0, 123000),
            False,
        ),
        # a day in the folders, the time in the name (motionEye's %Y-%m-%d/%H-%M-%S)
        ("2021-05-01/12-30-00.jpg", datetime(2021, 5, 1, 12, 30), False),
        ("shed/2021-05-01/12-30-00-01.jpg", datetime(2021, 5, 1, 12, 30), False),
        ("20210501/12.30.jpg", datetime(2021, 5, 1, 12, 30), False),
        ("2021/05/01/snap_12_30_05.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        # written other ways: dotted, an undashed date before a separated time, doubled
        # separators, unpadded (a script's f-string)
        ("2021.05.01-12.30.05.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        ("cam_20210501_12-30-05.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        ("ficus-2021-05-01--12-30-05.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        ("2021_05_01__12_30_05.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        ("2021-5-1_9-3-7.jpg", datetime(2021, 5, 1, 9, 3, 7), False),
        # an ISO 8601 zone designator fixes the instant (the value is then UTC)
        ("2021-05-01T12:30:05Z.jpg", datetime(2021, 5, 1, 12, 30, 5), True),
        ("2021-05-01T12:30:05.123Z.jpg", datetime(2021, 5, 1, 12, 30, 5), True),
        ("snap_2021-05-01T12-30Z.jpg", datetime(2021, 5, 1, 12, 30), True),
        ("2021-05-01T12:30:05+02:00.jpg", datetime(2021, 5, 1, 10, 30, 5), True),
        ("20210501T123005-0530.jpg", datetime(2021, 5, 1, 18, 0, 5), True),
        # not a zone: no T before an offset, a counter's minutes, a word after the Z
        ("2021-05-01_12-30-05+0200.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        ("2021-05-01T12-30-05-0001.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
        ("2021-05-01T12-30-05Zoom.jpg", datetime(2021, 5, 1, 12, 30, 5), False),
    ],
)
def test_file_name_patterns(name, expected, is_utc):
    assert filename_time(name) == (expected, is_utc)


@pytest.mark.parametrize(
    "name",
    [
        "frame_000123.jpg",
        "IMG_4411.JPG",
        "20221341_120000.jpg",
        "pic_12345.jpg",
        "photo_99999999999.jpg",
        "2022-04-01-12-00-99.jpg",  # impossible seconds: not read as 12:00
        "2022-04-01-12-0042.jpg",  # minutes run into more digits
        "2022-04-01-25-00.jpg",
        "20220401_1200.jpg",  # undashed to the minute: a date and a counter look the same
        "2022-04-01_0075.jpg",  # no such minute
        "2022-04-01_12005.jpg",  # five digits: not a time
        "2022-04-01-1200.jpg",  # a dash before four digits: a date and a counter
        "2021_05_01_12300.jpg",  # five digits after an underscored date: not a time
        "photo_16200000001234.jpg",  # fourteen digits: neither seconds nor milliseconds
        "2021-05-01/000123.jpg",  # bare digits under a dated folder: a counter
        "2021-05-01/frame_01.jpg",
        "2021-05-01/25-00-00.jpg",  # no such hour
        "2021-13-01/12-30-00.jpg",  # no such month
        "camera/12-30-00.jpg",  # a time of day without a day
        "2021/05/01/cam/12-30.jpg",  # year, month and day: the three folders it is in, or none
        "2021-5-1_9-30.jpg",  # unpadded without seconds: a date and a counter look the same
        "v1.2021.05.01-12.30.05.jpg",  # dotted into more numbers: a version, not a date
        "2021.05.01-12-30.jpg",  # dotted date to the minute
    ],
)
def test_names_without_a_time(name):
    assert filename_time(name) is None


def test_a_date_written_year_last_is_read_in_the_folders_order():
    """15-01-2021_12-30-00 (day first) and 01-15-2021_12-30-00 (month first) look alike when
    the day is the 12th or before: the folder's names decide the order, or nothing is read."""
    european = ["cam/15-01-2021_12-30-00.jpg", "cam/01-02-2021_08-00-00.jpg", "notes.jpg"]
    american = ["01-15-2021 12.30.jpg", "02-01-2021 08.00.jpg"]
    assert date_order(european) == "dmy" and date_order(american) == "mdy"
    assert date_order(["01-02-2021_08-00-00.jpg"]) is None  # the 1st of February or 2 January
    assert date_order(["13-02-2021_08-00-00.jpg", "02-13-2021_08-00-00.jpg"]) is None  # both
    assert date_order(["2021-05-01_12-30-00.jpg"]) is None  # year first: not this question
    read = filename_time
    assert read("01-02-2021_08-00-00.jpg", date_order="dmy") == (datetime(2021, 2, 1, 8), False)
    assert read("02-01-2021 08.00.jpg", date_order="mdy") == (datetime(2021, 2, 1, 8), False)
    assert read("15.01.2021_12h30.jpg", date_order="dmy") == (datetime(2021, 1, 15, 12, 30), False)
    assert read("15-01-2021_12-30-05.jpg", date_order="dmy") == (
        datetime(2021, 1, 15, 12, 30, 5),
        False,
    )
    assert read("15-01-2021_12-30-00.jpg") is None  # no order: not read
    assert read("15-01-2021_12-30-00.jpg", date_order="mdy") is None  # no 15th month
    assert read("15-01-2021_1230.jpg", date_order="dmy") is None  # undashed: a counter too


def test_precedence_exif_then_name_then_mtime():
    name = "20220401_120000.jpg"
    mtime_ns = 1_700_000_000_123_456_789
    exif = frame_time(_exif("2021:06:01 08:00:00"), name, mtime_ns)
    assert (exif.source, exif.local, exif.instant, exif.warning) == (
        "exif",
        datetime(2021, 6, 1, 8),
        None,
        None,
    )
    by_name = frame_time(_exif(), name, mtime_ns)
    assert (by_name.source, by_name.local) == ("filename", datetime(2022, 4, 1, 12))
    by_mtime = frame_time(None, "frame_0001.jpg", mtime_ns)
    assert by_mtime.source == "mtime" and by_mtime.local is None
    assert by_mtime.instant == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)


def test_a_camera_that_writes_only_the_digitized_or_the_changed_date():
    """DateTimeDigitized is a capture time, read as DateTimeOriginal is; IFD0's DateTime (when
    the file was last changed: some IP cameras write no other date, an editor's re-save writes
    its own) is read after the file name, before the mtime."""
    digitized = Image.Exif()
    digitized.get_ifd(0x8769)[0x9004] = "2021:06:01 08:00:00"
    digitized.get_ifd(0x8769)[0x9012] = "+02:00"
    got = frame_time(digitized, "20220401_120000.jpg", 1_700_000_000 * 10**9)
    assert (got.source, got.local, got.instant) == (
        "exif",
        datetime(2021, 6, 1, 8),
        datetime(2021, 6, 1, 6, tzinfo=timezone.utc),
    )
    changed = Image.Exif()
    changed[0x0132] = "2021:06:01 09:30:00"
    by_changed = frame_time(changed, "frame_0001.jpg", 1_700_000_000 * 10**9)
    assert (by_changed.source, by_changed.local, by_changed.instant) == (
        "exif",
        datetime(2021, 6, 1, 9, 30),
        None,
    )
    by_name = frame_time(changed, "20220401_120000.jpg", 1_700_000_000 * 10**9)
    assert (by_name.source, by_name.local) == ("filename", datetime(2022, 4, 1, 12))
    changed[0x0132] = "0000:00:00 00:00:00"  # a placeholder: on to the mtime
    assert frame_time(changed, "frame_0001.jpg", 1_700_000_000 * 10**9).source == "mtime"


def test_exif_offset_fixes_the_instant():
    t = frame_time(_exif("2024:07:01 14:00:00", "+02:00"), "x.jpg", 0)
    assert t.local == datetime(2024, 7, 1, 14)
    assert t.instant == datetime(2024, 7, 1, 12, tzinfo=timezone.utc)


def test_garbage_exif_falls_back_with_a_warning():
    zero = frame_time(_exif("0000:00:00 00:00:00"), "20220401_120000.jpg", 0)
    assert zero.source == "filename" and zero.local == datetime(2022, 4, 1, 12)
    assert zero.warning.startswith("warning: EXIF DateTimeOriginal '0000:00:00 00:00:00'")
    assert zero.warning.endswith("used the file name instead")
    future = frame_time(_exif("2999:01:01 00:00:00"), "frame.jpg", 1_700_000_000 * 10**9)
    assert future.source == "mtime" and "in the future" in future.warning
    assert future.warning.endswith("used the file mtime instead")
