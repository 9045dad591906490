"""Ingest a folder of frames into the store: walk, decode in parallel, write in bulk batches.

`ingest_folder()` walks FOLDER recursively (JPEG and PNG, any extension case, sorted, following
folder links but not in loops), skips files whose path, size and mtime are already in the store
(and files that failed before and are unchanged), decodes the rest in a process pool
(`pipeline.imagestats.read_frame`: draft-mode decode, thumbnail, statistics, timestamp), and
writes the results batch by batch, each batch in its own short write connection and
transaction, while the workers keep decoding. A killed run keeps every committed batch; the next
run continues where it stopped. Bad files become `ingest_errors` rows; garbage EXIF dates become
`timestamp` warnings (the frame is still ingested).

Workers come from a `forkserver` pool (no fork of a process that may hold TensorFlow or DuckDB
threads), so a script that calls `ingest_folder()` needs the usual
`if __name__ == "__main__":` guard; `python -m pipeline` and pytest have it.

Stored paths are relative to the folder with '/' separators. A name that is not valid UTF-8 is
stored with `\\xNN` escapes for its bad bytes; `frame_file(root, path)` finds the file again.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

import store
from pipeline import daylight, imagestats
from pipeline.errors import InputError
from pipeline.settings import Settings
from store import frames as frames_store

EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png"}
# Folders that NAS boxes and desktops fill with their own thumbnails, never frames.
SKIPPED_FOLDERS = {"@eaDir", "#recycle", "#snapshot", "$RECYCLE.BIN", "System Volume Information"}
WARNING_STAGE = "timestamp"
FLUSH_SECONDS = 20.0
POOL_MIN_FILES = 16


@dataclass
class IngestSummary:
    """What one ingest call did; `describe()` is the closing line the CLI prints."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    frame_ids: list[int] = field(default_factory=list)  # added or changed in this call
    n_new_errors: int = 0      # of `failed`: files that failed in this call
    n_warnings: int = 0        # timestamp warnings (frames still ingested)
    n_ambiguous: int = 0       # wall-clock times in a DST fall-back hour
    n_missing: int = 0         # wall-clock times in a DST spring-forward gap
    n_moved: int = 0           # unchanged frames whose folder moved (root updated)
    seconds: float = 0.0
    folder: str = ""

    def describe(self) -> str:
        decoded = self.added + self.changed + self.n_new_errors
        rate = (f", {decoded / self.seconds:.0f} files/s" if decoded >= 100 and self.seconds > 0
                else "")
        line = (f"ingest {self.folder}: {self.added} added, {self.changed} changed, "
                f"{self.unchanged} unchanged, {self.failed} failed in {self.seconds:.1f} s{rate}")
        extras = []
        if self.failed:
            extras.append("failed files are listed by `python -m pipeline info`")
        if self.n_warnings:
            extras.append(f"{self.n_warnings} timestamp warning(s)")
        if self.n_ambiguous or self.n_missing:
            extras.append(f"DST: {self.n_ambiguous} ambiguous and {self.n_missing} "
                          "non-existent local time(s) resolved")
        if self.n_moved:
            extras.append(f"{self.n_moved} frame(s) found in a moved folder")
        return line + ("; " + "; ".join(extras) if extras else "")


@dataclass
class FileEntry:
    os_path: str     # what open() needs (surrogate-escaped str for non-UTF-8 names)
    name: str        # stored path: relative, '/' separators, valid UTF-8
    size: int
    mtime_ns: int


def stored_text(os_text: str) -> str:
    """A file-system string as valid UTF-8 text: undecodable bytes become `\\xNN`."""
    return os.fsencode(os_text).decode("utf-8", errors="backslashreplace")


_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def frame_file(root: str, path: str) -> Path:
    """The original file of a stored (root, path), undoing `\\xNN` escapes when needed."""
    plain = os.path.join(root, path)
    if "\\x" not in plain or os.path.lexists(plain):
        return Path(plain)
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), plain.encode("utf-8"))
    return Path(os.fsdecode(raw))


def walk(root: str) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """Image files under `root` in sorted order, and (name, message) for what could not be read.

    Folder links are followed unless they lead back into a folder being walked (a loop).
    Hidden entries and NAS thumbnail folders are skipped.
    """
    files: list[FileEntry] = []
    problems: list[tuple[str, str]] = []
    root_stat = os.stat(root)
    stack: list[tuple[str, str, frozenset]] = [(root, "", frozenset({_key(root_stat)}))]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            problems.append((stored_text(prefix.rstrip("/") or "."),
                             f"cannot list the folder: {exc.strerror or exc}"))
            continue
        subfolders = []
        for entry in entries:
            name = entry.name
            rel = prefix + name
            if name.startswith(".") or name in SKIPPED_FOLDERS:
                continue
            try:
                is_dir = entry.is_dir()
            except OSError as exc:
                is_dir = False
                if _is_image_name(name):
                    problems.append((stored_text(rel), imagestats.describe_os_error(exc)))
                    continue
            if is_dir:
                try:
                    key = _key(os.stat(entry.path))
                except OSError as exc:
                    problems.append((stored_text(rel), imagestats.describe_os_error(exc)))
                    continue
                if key in ancestors:
                    problems.append((stored_text(rel), "symlink loop: this folder link points "
                                     "back to a folder that contains it; skipped"))
                    continue
                subfolders.append((entry.path, rel + "/", ancestors | {key}))
                continue
            if not _is_image_name(name):
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                problems.append((stored_text(rel), imagestats.describe_os_error(exc)))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append((stored_text(rel), "not a regular file"))
                continue
            files.append(FileEntry(entry.path, stored_text(rel), st.st_size, st.st_mtime_ns))
        stack.extend(reversed(subfolders))
    files.sort(key=lambda f: f.name.encode("utf-8"))
    return files, problems


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSIONS


def ingest_folder(folder: Path, db: Path, settings: Settings, progress: bool = True,
                  stage: str = "ingest") -> IngestSummary:
    """Add new and changed frames in `folder` (recursive) to the store at `db`."""
    started = time.monotonic()
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"the folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give the folder that holds the frames")
    daylight.check_place(settings)
    root_os = os.path.abspath(folder)
    root = stored_text(root_os)
    summary = IngestSummary(folder=str(folder))

    with store.connect(db) as con:
        where = daylight.place(con, settings)
        known = frames_store.known_files(con)
        failed_before = frames_store.failed_files(con, stage)
    try:
        files, problems = walk(root_os)
    except OSError as exc:
        raise InputError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None

    known_map = {p: (int(i), r, int(b), int(m)) for p, i, r, b, m in zip(
        known["path"], known["frame_id"], known["root"], known["file_bytes"], known["mtime_us"])}
    failed_map = {p: (b, m) for p, b, m in zip(
        failed_before["path"], failed_before["file_bytes"], failed_before["mtime_us"])}
    todo: list[FileEntry] = []
    existing_ids: dict[str, int] = {}
    moved: list[str] = []
    for entry in files:
        mtime_us = entry.mtime_ns // 1000
        frame = known_map.get(entry.name)
        if frame is not None and frame[2] == entry.size and frame[3] == mtime_us:
            summary.unchanged += 1
            if frame[1] != root:
                moved.append(entry.name)
            continue
        previous = failed_map.get(entry.name)
        if previous is not None and _same(previous, entry.size, mtime_us):
            summary.failed += 1
            continue
        if frame is not None:
            existing_ids[entry.name] = frame[0]
        todo.append(entry)
    del known_map, failed_map, known, failed_before

    writer = _BatchWriter(db, root, stage, where, settings, existing_ids, summary)
    if problems or moved:
        writer.write_problems(problems, moved)
    results = _decode_all(todo, settings, progress, stage)
    batch: list[imagestats.FrameResult] = []
    last_flush = time.monotonic()
    for result in results:
        batch.append(result)
        if len(batch) >= settings.ingest_batch_size or (
                time.monotonic() - last_flush >= FLUSH_SECONDS):
            writer.write(batch)
            batch = []
            last_flush = time.monotonic()
    if batch:
        writer.write(batch)
    if summary.n_ambiguous:
        # the fall-back hour is resolved by frame order across the whole store
        daylight.recompute(db, settings)
    summary.seconds = time.monotonic() - started
    return summary


def _same(previous: tuple, size: int, mtime_us: int) -> bool:
    b, m = previous
    return not pd.isna(b) and not pd.isna(m) and int(b) == size and int(m) == mtime_us


def _decode_all(todo: list[FileEntry], settings: Settings, progress: bool, stage: str
                ) -> Iterator[imagestats.FrameResult]:
    """Decode results in `todo` order: a process pool for real jobs, inline for tiny ones."""
    from tqdm import tqdm

    tasks = [(f.os_path, f.name, f.size, f.mtime_ns, settings.thumbnail_size,
              settings.max_image_pixels) for f in todo]
    bar = tqdm(total=len(tasks), unit="frame", desc=stage, file=sys.stderr,
               disable=not progress or not tasks, mininterval=0.5, dynamic_ncols=True)
    workers = max(1, min(int(settings.workers), len(tasks)))
    try:
        if workers == 1 or len(tasks) < POOL_MIN_FILES:
            imagestats.configure(settings.max_image_pixels)
            for task in tasks:
                yield imagestats.read_frame(task)
                bar.update()
            return
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pipeline.imagestats"])
        chunksize = max(1, min(32, len(tasks) // (workers * 16)))
        with context.Pool(workers, initializer=imagestats.configure,
                          initargs=(settings.max_image_pixels,)) as pool:
            for result in pool.imap(imagestats.read_frame, tasks, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()


class _BatchWriter:
    """Turns worker results into rows and writes each batch in one short transaction."""

    def __init__(self, db: Path, root: str, stage: str, where: daylight.Place,
                 settings: Settings, existing_ids: dict[str, int], summary: IngestSummary):
        self.db, self.root, self.stage, self.where = db, root, stage, where
        self.settings, self.existing_ids, self.summary = settings, existing_ids, summary

    def write_problems(self, problems: list[tuple[str, str]], moved: list[str]) -> None:
        errors = pd.DataFrame({
            "path": pd.Series([p for p, _ in problems], dtype=object),
            "stage": self.stage,
            "message": pd.Series([m for _, m in problems], dtype=object),
            "root": self.root,
            "file_bytes": pd.array([None] * len(problems), dtype="Int64"),
            "file_mtime": pd.Series([pd.NaT] * len(problems), dtype="datetime64[us, UTC]"),
        })
        with store.connect(self.db) as con:
            frames_store.write_batch(con, _empty_frames(), _empty_frames(), _empty_thumbs(),
                                     errors, [], [])
            frames_store.move_root(con, moved, self.root)
        self.summary.failed += len(problems)
        self.summary.n_new_errors += len(problems)
        self.summary.n_moved += len(moved)

    def write(self, batch: list[imagestats.FrameResult]) -> None:
        good = [r for r in batch if r.error is None]
        bad = [r for r in batch if r.error is not None]
        warned = [r for r in good if r.time.warning]
        error_rows = (
            [(r.name, self.stage, r.error, r.file_bytes, r.mtime_ns) for r in bad]
            + [(r.name, WARNING_STAGE, r.time.warning, r.file_bytes, r.mtime_ns) for r in warned])
        errors = pd.DataFrame({
            "path": pd.Series([e[0] for e in error_rows], dtype=object),
            "stage": pd.Series([e[1] for e in error_rows], dtype=object),
            "message": pd.Series([e[2] for e in error_rows], dtype=object),
            "root": self.root,
            "file_bytes": pd.array([e[3] for e in error_rows], dtype="Int64"),
            "file_mtime": _mtimes([e[4] for e in error_rows]),
        })
        cleared = [r.name for r in batch]
        with store.connect(self.db) as con:
            n_new = sum(1 for r in good if r.name not in self.existing_ids)
            fresh = iter(frames_store.new_frame_ids(con, n_new))
            ids = [self.existing_ids.get(r.name) or next(fresh) for r in good]
            rows = self._frame_rows(good, ids)
            is_changed = [r.name in self.existing_ids for r in good]
            mask = pd.Series(is_changed, dtype=bool, index=rows.index)
            thumbs = pd.DataFrame({
                "frame_id": pd.Series(ids, dtype="int64"),
                "jpeg": pd.Series([r.thumbnail for r in good], dtype=object),
                "width": pd.Series([r.thumb_width for r in good], dtype="int32"),
                "height": pd.Series([r.thumb_height for r in good], dtype="int32"),
            })
            frames_store.write_batch(con, rows[~mask], rows[mask], thumbs, errors, cleared,
                                     [self.stage, WARNING_STAGE])
        n_changed = sum(is_changed)
        self.summary.added += len(good) - n_changed
        self.summary.changed += n_changed
        self.summary.failed += len(bad)
        self.summary.n_new_errors += len(bad)
        self.summary.n_warnings += len(warned)
        self.summary.frame_ids.extend(ids)

    def _frame_rows(self, good: list[imagestats.FrameResult], ids: list[int]) -> pd.DataFrame:
        nat = pd.NaT
        base = pd.DataFrame({
            "frame_id": pd.Series(ids, dtype="int64"),
            "path": pd.Series([r.name for r in good], dtype=object),
            "root": self.root,
            "taken_at": pd.Series([r.time.local or nat for r in good], dtype="datetime64[us]"),
            "source_utc": pd.Series([r.time.instant or nat for r in good],
                                    dtype="datetime64[us, UTC]"),
            "time_source": pd.Series([r.time.source for r in good], dtype=object),
            "width": pd.Series([r.width for r in good], dtype="int32"),
            "height": pd.Series([r.height for r in good], dtype="int32"),
            "file_bytes": pd.Series([r.file_bytes for r in good], dtype="int64"),
            "file_mtime": _mtimes([r.mtime_ns for r in good]),
            "content_hash": pd.Series([r.content_hash for r in good], dtype=object),
            "mean_luma": [r.stats.mean_luma for r in good],
            "contrast": [r.stats.contrast for r in good],
            "sharpness": [r.stats.sharpness for r in good],
            "colorfulness": [r.stats.colorfulness for r in good],
        })
        timed = daylight.compute_times(base, self.where, self.settings)
        self.summary.n_ambiguous += timed.n_ambiguous
        self.summary.n_missing += timed.n_missing
        for column in frames_store.TIME_COLUMNS:
            base[column] = timed.times[column]
        return base[["frame_id", *frames_store.FRAME_COLUMNS]]


def _mtimes(mtime_ns: Iterable[int]) -> pd.Series:
    values = [int(m) // 1000 for m in mtime_ns]
    return pd.Series(pd.to_datetime(pd.Series(values, dtype="int64"), unit="us", utc=True),
                     dtype="datetime64[us, UTC]")


def _empty_frames() -> pd.DataFrame:
    return pd.DataFrame(columns=["frame_id", *frames_store.FRAME_COLUMNS])


def _empty_thumbs() -> pd.DataFrame:
    return pd.DataFrame(columns=["frame_id", "jpeg", "width", "height"])
