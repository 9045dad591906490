"""The `export` command: the dashboard's filters and export modes as flags, written to a file.

The flags are the dashboard's URL keys with the same values: `--run N`, `--from/--to
YYYY-MM-DD` (camera clock), `--hours H-H`, `--daylight`, `--weather`, `--cluster` (comma
lists), `--det KEY`, `--thr all|flagged|pctNN|topN`, `--junk-causes` (URL key `causes`: the
causes of junk the consensus counts, recombined from the run's cause scores, `store.causes`;
default the run's own); `--frames not_junk|keep|clean` is the
Review page's "Frames to export". `build_filter` checks them against the store as the dashboard
checks a URL (`store.facts.options`), but an unknown value is a one-line error, not a notice.
The frames are `store.facts.export_frames`, so the CLI and the dashboard export the same frames
in the same order; the file list, CSV and ffmpeg concat file are `store.export`'s, the MP4 is
`pipeline.video`'s. The summary says how many frames were left out and why, and names the
frames whose file could not be read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

import store
from pipeline import video
from pipeline.errors import InputError, PipelineError
from store import export as formats
from store import facts
from store.causes import choose
from store.facts import FrameFilter

FORMATS = ("mp4", "csv", "list", "ffconcat")
SUFFIXES = {".mp4": "mp4", ".csv": "csv", ".txt": "list", ".ffconcat": "ffconcat"}
MODE_HELP = {
    "not_junk": "every filtered frame not marked junk",
    "keep": "only frames marked keep",
    "clean": "frames marked keep, and unreviewed frames the detector does not flag",
}
# The same value forms as the dashboard's URL (dashboard/filters.py; a test checks both agree).
_HOURS = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_THR = re.compile(r"^(all|flagged|pct(\d{1,3}(?:\.\d{1,2})?)|top(\d{1,7}))$")
_INT = re.compile(r"^-?\d{1,9}$")
NAMED_AT_MOST = 20  # frames named per reason in the summary


@dataclass
class FilterFlags:
    """The filter flags as typed (None = not given)."""

    run: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    hours: str | None = None
    daylight: str | None = None
    weather: str | None = None
    cluster: str | None = None
    det: str | None = None
    thr: str | None = None
    junk_causes: str | None = None

    def describe(self) -> str:
        """The flags given, as typed: 'all frames' when none."""
        parts = [
            f"--{name} {value}"
            for name, value in (
                ("run", self.run),
                ("from", self.date_from),
                ("to", self.date_to),
                ("hours", self.hours),
                ("daylight", self.daylight),
                ("weather", self.weather),
                ("cluster", self.cluster),
                ("det", self.det),
                ("thr", self.thr),
                ("junk-causes", self.junk_causes),
            )
            if value is not None
        ]
        return " ".join(parts) or "all frames"


def _items(flag: str, text: str, known: list, convert=str) -> tuple:
    out = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        value = convert(item) if convert is str or _INT.match(item) else None
        if value is None or value not in known:
            choices = ", ".join(str(k) for k in known) or "none in this store"
            raise InputError(f"--{flag}: unknown value {item!r} (this store has: {choices})")
        if value not in out:
            out.append(value)
    if not out:
        raise InputError(f"--{flag} needs at least one value")
    return tuple(out)


def build_filter(con, flags: FilterFlags) -> FrameFilter:
    """The `FrameFilter` the flags describe, checked against the store; `InputError` names the
    flag and the values the store has when one is not known."""
    runs = facts.complete_run_ids(con)
    if flags.run is not None and flags.run not in runs:
        raise InputError(
            f"--run {flags.run} is not a complete analysis run in this store "
            f"(complete runs: {', '.join(map(str, runs)) or 'none yet'})"
        )
    run_id = flags.run if flags.run is not None else (runs[0] if runs else None)
    opts = facts.options(con, run_id)
    values: dict = {"run_id": run_id}
    if flags.date_from is not None:
        values["date_from"] = flags.date_from
    if flags.date_to is not None:
        values["date_to"] = flags.date_to
    if flags.date_from and flags.date_to and flags.date_from > flags.date_to:
        raise InputError(f"--to {flags.date_to} is before --from {flags.date_from}")
    if flags.hours is not None:
        match = _HOURS.match(flags.hours.strip())
        if not match or not (0 <= int(match[1]) <= 23 and 0 <= int(match[2]) <= 23):
            raise InputError(
                f"--hours wants an hour range like 6-18 (0-23, both included; "
                f"22-5 wraps past midnight), not {flags.hours!r}"
            )
        values["hour_from"], values["hour_to"] = int(match[1]), int(match[2])
    if flags.daylight is not None:
        values["daylight"] = _items("daylight", flags.daylight, opts["daylight"])
    if flags.weather is not None:
        values["conditions"] = _items("weather", flags.weather, opts["conditions"])
    if flags.thr is not None:
        match = _THR.match(flags.thr.strip())
        if not match:
            raise InputError(
                f"--thr wants all, flagged, pctNN (a percentile 0-100) or topN, not {flags.thr!r}"
            )
        if match[2] is not None:
            if not 0 <= float(match[2]) <= 100:
                raise InputError("--thr pctNN: the percentile must be 0-100")
            values["threshold_kind"], values["threshold"] = "pct", float(match[2])
        elif match[3] is not None:
            if int(match[3]) < 1:
                raise InputError("--thr topN: N must be at least 1")
            values["threshold_kind"], values["threshold"] = "topk", float(match[3])
        else:
            values["threshold_kind"] = match[1]
    needs_run = [
        f"--{name}"
        for name, value in (("cluster", flags.cluster), ("det", flags.det))
        if value is not None
    ]
    if values.get("threshold_kind", "all") != "all":
        needs_run.append("--thr")
    if needs_run and run_id is None:
        verb = "needs" if len(needs_run) == 1 else "need"
        raise InputError(
            f"{' and '.join(needs_run)} {verb} an analysis run; this store has "
            "none yet (run `python -m pipeline analyze`)"
        )
    if flags.cluster is not None:
        values["clusters"] = _items("cluster", flags.cluster, opts["clusters"], int)
    if flags.det is not None:
        if flags.det not in opts["detectors"]:
            raise InputError(
                f"--det: {flags.det!r} is not a detector scored in run {run_id} "
                f"(it has: {', '.join(opts['detectors'])})"
            )
        values["detector"] = flags.det
    elif opts["detectors"]:
        values["detector"] = opts["detectors"][0]
    if flags.junk_causes is not None:
        if run_id is None:
            raise InputError(
                "--junk-causes needs an analysis run; this store has none yet "
                "(run `python -m pipeline analyze`)"
            )
        if not opts["causes"]:
            raise InputError(
                f"--junk-causes: run {run_id} stored no score per cause (it was analysed "
                "before causes were recorded: run `python -m pipeline analyze` again)"
            )
        causes = _items("junk-causes", flags.junk_causes, opts["causes"])
        values["junk_causes"] = choose(causes, opts["causes"], opts["junk_causes"])
    return FrameFilter(**values)


def format_of(fmt: str | None, out: Path) -> str:
    """The format asked for, or the one `out`'s suffix names."""
    if fmt is not None:
        return fmt
    if out.suffix.lower() in SUFFIXES:
        return SUFFIXES[out.suffix.lower()]
    raise InputError(
        f"give --format ({'|'.join(FORMATS)}); the suffix of {out.name!r} does "
        f"not name one ({', '.join(SUFFIXES)})"
    )


@dataclass
class ExportSummary:
    out: Path
    fmt: str
    mode: str
    flags: FilterFlags
    detector: str
    n_exported: int
    left_out: dict[str, int]  # store.facts.export_left_out
    no_time: list[str] = field(default_factory=list)
    unreadable: list[video.LeftOut] = field(default_factory=list)
    n_line_breaks: int = 0
    result: video.VideoResult | None = None
    analysed: bool = True  # the store has a complete analysis run (else nothing is flagged)

    def describe(self) -> str:
        n_all = self.left_out["n_frames"]
        head = f"exported {self.n_exported:,} of {n_all:,} frames to {self.out}"
        if self.result is not None:
            r = self.result
            head += f": H.264 MP4 {r.width}x{r.height}, {r.fps} fps, {r.seconds:.1f} s" + (
                f", deflicker over {r.deflicker} frames" if r.deflicker else ""
            )
        else:
            head += f" ({self.fmt})"
        lines = [
            head + f"; frames: {self.mode} ({MODE_HELP[self.mode]}); filters: "
            f"{self.flags.describe()}"
        ]
        reasons = [
            (self.left_out["filters"], "outside the filters"),
            (self.left_out["threshold"], f"left out by the {self.detector} threshold"),
            (self.left_out["junk"], "marked junk"),
            (self.left_out["not_keep"], "not marked keep"),
            (self.left_out["flagged"], f"flagged by {self.detector}"),
            (self.n_line_breaks, "whose file name holds a line break"),
        ]
        counted = [f"{n:,} {_frames(n)} {why}" for n, why in reasons if n]
        if counted:
            lines.append("left out: " + "; ".join(counted))
        if self.mode == "clean" and not self.analysed:
            lines.append(
                "note: the store has no analysis run yet, so no frame is flagged and every "
                "unreviewed frame counts as clean; run `python -m pipeline analyze` first to "
                "leave the detectors' flags out"
            )
        if self.no_time:
            lines.append(_named(self.no_time, "without a time (a time-lapse needs one)"))
        gone = [f.path for f in self.unreadable if f.gone]
        bad = [f"{f.path} ({f.reason})" for f in self.unreadable if not f.gone]
        if gone:
            lines.append(_named(gone, "whose file is gone"))
        if bad:
            lines.append(_named(bad, "that could not be read"))
        return "\n".join(lines)


def _frames(n: int) -> str:
    return "frame" if n == 1 else "frames"


def _named(items: list[str], why: str) -> str:
    shown = "; ".join(items[:NAMED_AT_MOST])
    more = f"; and {len(items) - NAMED_AT_MOST:,} more" if len(items) > NAMED_AT_MOST else ""
    return f"left out: {len(items):,} {_frames(len(items))} {why}: {shown}{more}"


def export(
    db: Path, flags: FilterFlags, mode: str, fmt: str, out: Path, options: video.VideoOptions
) -> ExportSummary:
    """Write the export file and say what went in and what was left out (and why)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"--out: the folder {out.parent} does not exist")
    real_db = os.path.realpath(db)
    _check_not_input(out, [Path(f"{real_db}{end}") for end in ("", ".wal", ".lock")], "the store")
    with store.connect(db, read_only=True) as con:  # closed before the long encode
        flt = build_filter(con, flags)
        frames = facts.export_frames(con, flt, mode)
        left_out = facts.export_left_out(con, flt, mode)
    _check_not_input(
        out, [Path(formats.file_path(p)) for p in frames["abs_path"]], "one of the frames exported"
    )
    summary = ExportSummary(
        out=out,
        fmt=fmt,
        mode=mode,
        flags=flags,
        detector=flt.detector,
        n_exported=len(frames),
        left_out=left_out,
        analysed=flt.run_id is not None,
    )
    if frames.empty and not left_out["n_frames"]:
        raise InputError(
            f"the store {db} has no frames yet, so there is nothing to export: run "
            f"`python -m pipeline ingest FOLDER --db {db}` (or `run`) first"
        )
    if frames.empty:
        raise InputError(
            f"no frames to export with --frames {mode} and {flags.describe()} "
            f"({summary.describe().splitlines()[-1]})"
        )
    try:
        if fmt == "mp4":
            _write_mp4(frames, out, options, summary)
        else:
            _write_text(frames, out, fmt, options, summary)
    except OSError as exc:  # the output; a frame file that cannot be read is left out instead
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return summary


def _check_not_input(out: Path, inputs: list[Path], what: str) -> None:
    """Refuse an `out` that is one of `inputs` (by its real path): writing the export there
    would destroy the store or a frame the export reads."""
    if not out.exists():
        return
    real = os.path.realpath(out)
    name = os.path.basename(real)  # stored frame paths are real paths: compare those named so
    if any(os.path.realpath(path) == real for path in inputs if path.name == name):
        raise InputError(
            f"--out {out} is {what}: writing there would destroy it; nothing was written. "
            "Give --out another file name"
        )


def _write_text(
    frames: pd.DataFrame, out: Path, fmt: str, options: video.VideoOptions, summary: ExportSummary
) -> None:
    """The file list, CSV or concat file exactly as the dashboard's download gives it."""
    if fmt == "csv":
        _replace(out, formats.export_csv(frames).encode("utf-8"))
        return
    _, summary.n_line_breaks = formats.one_line_paths(frames["abs_path"])
    summary.n_exported -= summary.n_line_breaks
    text = (
        formats.export_list(frames["abs_path"])
        if fmt == "list"
        else formats.export_concat(frames["abs_path"], options.fps, summary.flags.describe())
    )
    _replace(out, formats.to_bytes(text))


def _replace(out: Path, data: bytes) -> None:
    """Write `data` at `video.part_path(out)`, as the MP4 is written, and move it into place
    once whole: a write that fails (a full disk) leaves an earlier export as it was, and no
    part file."""
    part = video.part_path(out)
    try:
        part.write_bytes(data)
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _write_mp4(
    frames: pd.DataFrame, out: Path, options: video.VideoOptions, summary: ExportSummary
) -> None:
    """The MP4 of the frames with a time, in time order; the others are named."""
    timed = frames["taken_at"].notna()
    summary.no_time = [formats.file_path(p) for p in frames.loc[~timed, "abs_path"]]
    files = [formats.file_path(p) for p in frames.loc[timed, "abs_path"]]
    if not files:
        raise InputError(
            f"none of the {len(frames):,} frames to export has a time, so they "
            "have no order for a video (export --format list to see them)"
        )
    try:
        result = video.encode_mp4(files, out, options)
    except video.NoFramesError as exc:
        raise PipelineError(f"no video written: {exc}") from None
    summary.result = result
    summary.unreadable = result.left_out
    summary.n_exported = result.n_frames
