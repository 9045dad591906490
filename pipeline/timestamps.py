"""When was a frame taken: EXIF DateTimeOriginal (or DateTimeDigitized), then file-name
patterns, then EXIF DateTime (IFD0: a camera that writes no other date; an editor's re-save
writes its own time there, so it comes after the name), then file mtime.

The file name is the frame's path under the folder ingested: a date and time in the file's own
name (`filename_time`'s patterns, a Unix epoch), or a date in the folders above it and the time
in its name, as motionEye files frames (`2021-05-01/12-30-00.jpg`; also `20210501/...` and
`2021/05/01/...`).

`frame_time()` applies the precedence and returns a `FrameTime`: either a camera wall-clock time
(`local`, naive; the timezone setting turns it into UTC later) or an instant the source itself
fixes (`instant`, UTC: EXIF with OffsetTimeOriginal, a Unix epoch in the name, a name's ISO
8601 time with a zone designator such as `2021-05-01T12:30:00Z`, the file mtime).
Every source is held to the same rule: a date before 1980 or after now + 1 day is not a camera
date. A garbage EXIF date (`0000:00:00 00:00:00`, a date in the future, text that is no date)
falls through to the next source and comes back as a `warning` so ingest can record it; when the
mtime is implausible too (a restored backup dated 1970, a clock that jumped to 2446), the frame
has no time (source 'none') and a warning says so. Frames without a time are still scored by
everything that does not need one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# EXIF tags (in the Exif IFD 0x8769)
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011
SUBSEC_TIME_ORIGINAL = 0x9291
DATETIME_DIGITIZED = 0x9004
OFFSET_TIME_DIGITIZED = 0x9012
SUBSEC_TIME_DIGITIZED = 0x9292
OFFSET_TIME = 0x9010
SUBSEC_TIME = 0x9290
# ... and in IFD0: DateTime, when the file was last changed. Some IP cameras write no other
# date; an editor that re-saves a frame writes its own time there, so a time in the file name
# comes first (`frame_time`).
DATETIME = 0x0132
# Where a date is, in order: (tag, in IFD0 rather than the Exif IFD, its subseconds' tag, its
# offset's tag, its name in warnings). The capture time first; DateTime on its own
# (`frame_time` reads it after the file name).
_CAPTURE_TAGS = [
    (DATETIME_ORIGINAL, False, SUBSEC_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL, "DateTimeOriginal"),
    (DATETIME_DIGITIZED, False, SUBSEC_TIME_DIGITIZED, OFFSET_TIME_DIGITIZED, "DateTimeDigitized"),
]
_CHANGED_TAGS = [(DATETIME, True, SUBSEC_TIME, OFFSET_TIME, "DateTime")]

# Dates before this are not camera dates (EXIF placeholders, epoch 0 clocks).
EARLIEST = datetime(1980, 1, 1)
# Unix epoch seconds we accept in a file name: 2001-09-09 .. 2033-05-18 (ten digits, 1...)
_EPOCH_MIN, _EPOCH_MAX = 1_000_000_000, 1_999_999_999

_EXIF_FORMAT = re.compile(
    r"^\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
)
_OFFSET_FORMAT = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})\s*$")

# File-name patterns, most specific first. Digits may not touch other digits, so a long number
# (a frame counter, an epoch) is not mistaken for a date.
_NAME_PATTERNS = [
    # 2022-04-01_12-00-00, 2022-04-01T12.00.00, 2022-04-01 12-00-00
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_T .\-](\d{2})[-.:_](\d{2})[-.:_](\d{2})(?!\d)"),
    # 2022_04_01_120000, 2022_04_01-12_00_00
    re.compile(r"(?<!\d)(\d{4})_(\d{2})_(\d{2})[_\-T ](\d{2})_?(\d{2})_?(\d{2})(?!\d)"),
    # 20220401_120000, 20220401-120000, 20220401T120000, IMG_20220401_120000
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})[_\-T ](\d{2})(\d{2})(\d{2})(?!\d)"),
    # 20220401120000 (fourteen digits in a row)
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?!\d)"),
    # 20220401120000123: to the millisecond (Hikvision cameras' FTP uploads,
    # 192.168.1.64_01_20220401120000123_TIMING.jpg)
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{3})(?!\d)"),
    # to the minute, dashes in the date: 2020-02-01-08-00, 2022-04-01_12-00, 2022-04-01 12.00
    # (a benchmark camera's names; the seconds are then 0). Not after more digits (a frame
    # counter or seconds the patterns above found implausible), and not undashed
    # (20220401_1200): a date and a four-digit counter would read as a time for minutes < 60
    # and fall back to the mtime after, giving one folder two clocks.
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_T .\-](\d{2})[-.:_h](\d{2})(?![-.:_]?\d)"),
    # to the minute, the time undashed after a dashed date: 2021-05-01_1230 (the Raspberry Pi
    # documentation's `date +"%Y-%m-%d_%H%M"`, which many Pi time-lapse and plant cameras
    # copy). The dashed date is what makes it a clock: a bare 20220401_1200 stays unread.
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_T ](\d{2})(\d{2})(?![-.:_]?\d)"),
    # the same with the date's parts apart by underscores: 2021_05_01_1230 (`%Y_%m_%d_%H%M`)
    re.compile(r"(?<!\d)(\d{4})_(\d{2})_(\d{2})[_T ](\d{2})(\d{2})(?![-.:_]?\d)"),
    # to the second, written other ways: the date's parts apart by dots (2021.05.01-12.30.00),
    # an undashed date before a separated time (20210501_12-30-00), doubled separators
    # (2021-05-01--12-30-00, 2021_05_01__12_30_00). The date's separators are one character
    # (or none) used twice, the time's likewise (the back-references, which are not digits).
    re.compile(
        r"(?<![\d.])(\d{4})([-_.]?)(\d{2})\2(\d{2})[_T .\-]{1,2}(\d{2})([-.:_])(\d{2})\6(\d{2})(?!\d)"
    ),
    # unpadded, as a script's f"{t.year}-{t.month}-{t.day}_{t.hour}-{t.minute}-{t.second}"
    # writes: 2021-5-1_9-3-7 (every part there, so it is a clock, not a counter)
    re.compile(
        r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})[_T .\-](\d{1,2})[-.:_](\d{1,2})[-.:_](\d{1,2})(?!\d)"
    ),
]
# An ISO 8601 zone designator right after a name's time (a fraction of a second between them
# is passed over): Z is UTC (`date -u +%Y-%m-%dT%H:%M:%SZ`, JavaScript's `toISOString()`,
# 2021-05-01T12:30:00.000Z), and an offset is read after a date and time joined by a T
# (2021-05-01T12:30:00+02:00, 20210501T123000-0500), where it cannot be a counter. Either fixes
# the instant, as an epoch does. An offset beyond 14 hours, or whose minutes are not a quarter
# hour, is no offset (2021-05-01T12-30-00-0001: a frame counter).
_ZONE_SUFFIX = re.compile(r"(?:[.,]\d{1,9})?(?:(Z)|([+-])(\d{2}):?(\d{2}))(?![A-Za-z0-9])")
# A folder named for a day (2021-05-01, 2021_05_01, 20210501), or three folders 2021/05/01, and
# a time with separators in the file's name (12-30-00, 12.30, 12_30_00): motionEye's
# `%Y-%m-%d/%H-%M-%S`. Bare digits under a dated folder (000123.jpg) stay unread: a counter.
_FOLDER_DATE = re.compile(r"(\d{4})[-_]?(\d{2})[-_]?(\d{2})")
_NAME_CLOCK = re.compile(r"(?<![\d.:-])(\d{2})[-_.:](\d{2})(?:[-_.:](\d{2}))?(?!\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A date written year last, its day and month first in either order, and a time with separators:
# 15-01-2021_12-30-00 (the European %d-%m-%Y), 01.15.2021 12.30 (the American %m-%d-%Y). One
# name cannot say which order it is in, so a folder's order is read from all of its names
# (`date_order`): the one in which some name's first (or second) number is over 12 while no
# name's other one is. Without an order the names are not read.
_YEAR_LAST = re.compile(
    r"(?<![\d.])(\d{2})([-_.])(\d{2})\2(\d{4})[_T .\-]{1,2}(\d{2})([-.:_h])(\d{2})(?:\6(\d{2}))?(?!\d)"
)
DATE_ORDERS = ("dmy", "mdy")
# Unix epoch seconds (ten digits), with a fraction or as milliseconds (thirteen digits, as
# JavaScript's `Date.now()` and Java's `currentTimeMillis` name files)
_EPOCH_PATTERN = re.compile(r"(?<!\d)(1\d{9})(\d{3})?(?:\.\d+)?(?!\d)")


@dataclass(frozen=True)
class FrameTime:
    """A frame's time as its source gives it.

    One of `local` (camera wall clock, naive) and `instant` (aware UTC) is set; with EXIF +
    OffsetTimeOriginal both are (the wall clock and the instant it fixes); with source 'none'
    neither is (no source gave a plausible date).
    """

    source: str  # 'exif' | 'filename' | 'mtime' | 'none' ('given': serve)
    local: datetime | None = None  # camera wall clock, naive
    instant: datetime | None = None  # UTC, aware, when the source fixes it
    warning: str | None = None  # a garbage EXIF date we skipped, for ingest_errors


class BadExifDate(ValueError):
    """An EXIF date that is present but not a usable camera date."""


def parse_exif_datetime(
    text: str | bytes, subsec: str | bytes | None = None, now: datetime | None = None
) -> datetime:
    """An EXIF 'YYYY:MM:DD HH:MM:SS' as a naive datetime; raises `BadExifDate` for garbage."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    text = str(text).strip("\x00 \t")
    match = _EXIF_FORMAT.match(text)
    if match is None:
        raise BadExifDate(f"{text!r} is not an EXIF date")
    parts = [int(p) for p in match.groups()[:6]]
    try:
        value = datetime(*parts)
    except ValueError:
        raise BadExifDate(f"{text!r} is not a valid date") from None
    fraction = match.group(7)
    if fraction is None and subsec:
        digits = re.match(
            r"\s*(\d{1,6})",
            subsec.decode("ascii", "replace") if isinstance(subsec, bytes) else str(subsec),
        )
        fraction = digits.group(1) if digits else None
    if fraction:
        value = value.replace(microsecond=int(fraction.ljust(6, "0")[:6]))
    _check_plausible(value, text, now)
    return value


def _check_plausible(value: datetime, text: str, now: datetime | None) -> None:
    now = now or datetime.now()
    if value < EARLIEST:
        raise BadExifDate(f"{text!r} is before {EARLIEST:%Y} (a camera clock that was never set)")
    if value > now + timedelta(days=1):
        raise BadExifDate(f"{text!r} is in the future")


def parse_exif_offset(text: str | bytes | None) -> int | None:
    """OffsetTimeOriginal '+02:00' as minutes east of UTC; None when absent or unreadable."""
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    match = _OFFSET_FORMAT.match(str(text).strip("\x00"))
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    total = int(hours) * 60 + int(minutes)
    if total > 14 * 60 or int(minutes) >= 60:
        return None
    return -total if sign == "-" else total


def exif_time(exif) -> tuple[datetime | None, int | None, str | None]:
    """(wall clock, offset minutes, warning) from a Pillow `Image.Exif`: its capture time,
    DateTimeOriginal, else DateTimeDigitized (a camera that writes only the one).

    The wall clock is None when neither is there or the first there is garbage; a garbage one
    gives a warning text instead.
    """
    return _exif_date(exif, _CAPTURE_TAGS)


def _exif_date(exif, tags) -> tuple[datetime | None, int | None, str | None]:
    """(wall clock, offset minutes, warning) of the first of `tags` (`_CAPTURE_TAGS`) that the
    Pillow `Image.Exif` has; a garbage one gives (None, None, warning)."""
    try:
        ifd = exif.get_ifd(EXIF_IFD)
    except (KeyError, ValueError, TypeError, OSError):
        return None, None, None
    for tag, in_ifd0, subsec, offset, name in tags:
        raw = (exif if in_ifd0 else ifd).get(tag)
        if raw is None or not str(raw).strip("\x00 "):
            continue
        try:
            value = parse_exif_datetime(raw, ifd.get(subsec))
        except BadExifDate as exc:
            return None, None, f"EXIF {name} {exc}"
        return value, parse_exif_offset(ifd.get(offset)), None
    return None, None, None


def filename_time(
    name: str, now: datetime | None = None, date_order: str | None = None
) -> tuple[datetime, bool] | None:
    """A time in a file name: (value, is_utc). Epoch seconds and a date with a zone designator
    (`_ZONE_SUFFIX`: 2021-05-01T12:30:00Z) are UTC; other dates are the camera's wall clock. A
    date written year last is read in the folder's `date_order` ('dmy' or 'mdy'; None: not
    read, see `date_order`)."""
    stem = name.rsplit("/", 1)[-1]
    for pattern in _NAME_PATTERNS:
        for match in pattern.finditer(stem):
            parts = [int(p) for p in match.groups() if p.isdigit()]  # separators left out
            if len(parts) == 7:  # milliseconds
                parts[6] *= 1000
            try:
                value = datetime(*parts)
                _check_plausible(value, match.group(0), now)
            except (ValueError, BadExifDate):
                continue
            offset = _zone_offset(stem, match)
            if offset is None:
                return value, False
            return value - timedelta(minutes=offset), True
    if date_order in DATE_ORDERS:
        for match in _YEAR_LAST.finditer(stem):
            first, second, year = int(match[1]), int(match[3]), int(match[4])
            day, month = (first, second) if date_order == "dmy" else (second, first)
            clock = [int(p) for p in (match[5], match[7], match[8]) if p is not None]
            try:
                value = datetime(year, month, day, *clock)
                _check_plausible(value, match.group(0), now)
            except (ValueError, BadExifDate):
                continue
            return value, False
    for match in _EPOCH_PATTERN.finditer(stem):
        seconds = int(match.group(1))
        if _EPOCH_MIN <= seconds <= _EPOCH_MAX:
            millis = int(match.group(2) or 0)
            value = datetime.fromtimestamp(seconds, timezone.utc).replace(
                tzinfo=None, microsecond=1000 * millis
            )
            try:
                _check_plausible(value, match.group(0), now)
            except BadExifDate:
                continue
            return value, True
    value = _folder_dated(name, now)
    return None if value is None else (value, False)


def date_order(names) -> str | None:
    """The order in which a folder's names write a date year last (`_YEAR_LAST`): 'dmy' when
    some name's first number is a day over 12 and none's second is, 'mdy' the other way round,
    None when no name says (every day so far at most the 12th) or names say both."""
    first_over = second_over = False
    for name in names:
        match = _YEAR_LAST.search(name.rsplit("/", 1)[-1])
        if match is not None:
            first_over |= 12 < int(match[1]) <= 31
            second_over |= 12 < int(match[3]) <= 31
    if first_over != second_over:
        return "dmy" if first_over else "mdy"
    return None


def _zone_offset(stem: str, match: re.Match) -> int | None:
    """Minutes east of UTC that an ISO 8601 zone designator right after the time `match` found
    in `stem` gives (`_ZONE_SUFFIX`: 0 for Z), or None when there is none."""
    zone = _ZONE_SUFFIX.match(stem, match.end())
    if zone is None:
        return None
    if zone[1]:
        return 0
    hours, minutes = int(zone[3]), int(zone[4])
    joined_by_t = "T" in match.group(0)
    if not joined_by_t or hours > 14 or minutes % 15:
        return None
    return (hours * 60 + minutes) * (-1 if zone[2] == "-" else 1)


def _folder_dated(name: str, now: datetime | None) -> datetime | None:
    """A day in the folders of `name` (a path, '/' separators: `_folder_day`) and the time of
    day in its file name (`_NAME_CLOCK`, the extension left out), or None."""
    folders = name.split("/")[:-1]
    day = _folder_day(folders)
    if day is None:
        return None
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    for match in _NAME_CLOCK.finditer(stem):
        clock = [int(p) for p in match.groups() if p is not None]
        try:
            value = datetime(*day, *clock)
            _check_plausible(value, name, now)
        except (ValueError, BadExifDate):
            continue
        return value
    return None


def _folder_day(folders: list[str]) -> tuple[int, int, int] | None:
    """(year, month, day) of the last three folders as 2021/05/01, else of the nearest folder
    named for a day (2021-05-01, 2021_05_01, 20210501), else None."""
    last = folders[-3:]
    if [len(f) for f in last] == [4, 2, 2] and all(f.isdigit() for f in last):
        return int(last[0]), int(last[1]), int(last[2])
    for folder in reversed(folders):
        found = _FOLDER_DATE.fullmatch(folder)
        if found:
            return int(found[1]), int(found[2]), int(found[3])
    return None


def frame_time(exif, name: str, mtime_ns: int | None, date_order: str | None = None) -> FrameTime:
    """Apply the precedence EXIF capture time -> file name -> EXIF DateTime -> mtime to one
    file (`mtime_ns` None: bytes without a file, e.g. an upload to `serve`: no mtime;
    `date_order`: its folder's, for a date written year last)."""
    local, offset, warning = exif_time(exif) if exif is not None else (None, None, None)
    if local is not None:
        return _exif_frame_time(local, offset)
    found = filename_time(name, date_order=date_order)
    if found is not None:
        value, is_utc = found
        if is_utc:
            return FrameTime(
                "filename",
                instant=value.replace(tzinfo=timezone.utc),
                warning=_fell_back(warning, "the file name"),
            )
        return FrameTime("filename", local=value, warning=_fell_back(warning, "the file name"))
    # IFD0's DateTime: the camera's, where it writes no capture time (a garbage one is passed
    # over: the capture time's warning, if any, is the one kept)
    changed, offset, _ = _exif_date(exif, _CHANGED_TAGS) if exif is not None else (None,) * 3
    if changed is not None:
        return _exif_frame_time(changed, offset, _fell_back(warning, "EXIF DateTime"))
    if mtime_ns is None:
        note = f"{warning}; " if warning else ""
        return FrameTime("none", warning=f"warning: {note}no time in the EXIF or the name")
    try:
        instant = _EPOCH + timedelta(microseconds=mtime_ns // 1000)
        _check_plausible(instant.replace(tzinfo=None), f"{instant:%Y-%m-%d %H:%M:%S}", None)
    except (BadExifDate, OverflowError) as exc:
        why = exc if isinstance(exc, BadExifDate) else f"{mtime_ns} ns is out of range"
        note = f"{warning}; " if warning else ""
        return FrameTime(
            "none",
            warning=f"warning: {note}no plausible time: the file mtime "
            f"{why}; the frame is kept without a time",
        )
    return FrameTime("mtime", instant=instant, warning=_fell_back(warning, "the file mtime"))


def _exif_frame_time(local: datetime, offset: int | None, warning: str | None = None) -> FrameTime:
    """An EXIF date as a `FrameTime`: the wall clock, and the instant its offset fixes."""
    instant = None
    if offset is not None:
        instant = (local - timedelta(minutes=offset)).replace(tzinfo=timezone.utc)
    return FrameTime("exif", local=local, instant=instant, warning=warning)


def given_time(text: str) -> FrameTime:
    """A time given for a frame by its sender (ISO 8601; `serve`'s `taken_at` field), source
    'given': with an offset (or Z) it fixes the instant, without one it is the camera's wall
    clock. Held to the same rule as every source; a ValueError says what is wrong."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time such as 2024-04-10T12:00:00 or "
            "2024-04-10T12:00:00+02:00"
        ) from None
    if value.tzinfo is None:
        _check_plausible(value, text, None)
        return FrameTime("given", local=value)
    instant = value.astimezone(timezone.utc)
    _check_plausible(instant.replace(tzinfo=None), text, None)
    return FrameTime("given", instant=instant)


def _fell_back(warning: str | None, used: str) -> str | None:
    return None if warning is None else f"warning: {warning}; used {used} instead"


def copied_times_advice(root: str, n: int, span: float) -> str:
    """What `ingest` and `info` say of a folder whose frames were timed by a copy."""
    return (
        f"the {n} frames of {root} take their time from their files' modification times, "
        f"all within {span:.0f} s: the time they were copied, not taken, so they cannot be "
        "told apart by time (daylight, the quality checks' pools, the time line). Copy them "
        "again keeping the dates (cp -p, rsync -t) or name each file with its time "
        "(2021-05-01_1230.jpg), then ingest again"
    )
