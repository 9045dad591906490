"""Ingest a folder of frames into the store: walk, decode in parallel, write in bulk batches.

`ingest_folder()` walks FOLDER recursively (JPEG, PNG, WebP and BMP, any extension case, sorted,
following folder links but not in loops), skips files whose location, size and mtime are already
in the store (and files that failed before and are unchanged), decodes the rest in a process pool
(`pipeline.imagestats.read_frame`: draft-mode decode, thumbnail, statistics, timestamp), and
writes the results batch by batch, each batch in its own short write connection and
transaction, while the workers keep decoding. A killed run keeps every committed batch; the next
run continues where it stopped. Bad files become `ingest_errors` rows; garbage EXIF dates become
`timestamp` warnings (the frame is still ingested).

Workers come from a `forkserver` pool (no fork of a process that may hold TensorFlow or DuckDB
threads), so a script that calls `ingest_folder()` needs the usual
`if __name__ == "__main__":` guard; `python -m pipeline` and pytest have it. With
`executor = "ray"` the same `read_frame` runs in Ray tasks on a cluster
(`pipeline.ray_executor`), its results arrive in any order, and this process still writes.

A frame is its file's place: `location`, the absolute path with symlinks resolved. Two memory
cards that both hold `IMG_0001.jpg`, ingested from two folders, are two frames; one file reached
again (from a parent folder, through a folder link or a second hard link) is the same frame. A
known place whose file has another size or mtime is read again: the same bytes (a touch) keep
everything; other pixels are a *changed* frame, which keeps its id but loses its vectors, its
rows in earlier analysis runs and its review, recorded as a 'changed' `ingest_errors` row that
`info` lists. A known frame found at a new place (same name, size and mtime, its old file gone)
has moved: its root and path follow it, nothing else changes.

Stored paths are relative to the ingested folder with '/' separators. A name that is not valid
UTF-8 is stored with `\\xNN` escapes for its bad bytes; `frame_file(root, path)` finds the file
again.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd

import store
from pipeline import daylight, executors, imagestats, pixels
from pipeline.errors import InputError
from pipeline.inputs import check_folder
from pipeline.settings import Settings
from pipeline.timestamps import copied_times_advice, date_order
from store import embeddings as embeddings_store
from store import frames as frames_store
from store import kv

EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp"}
# Pictures in formats ingest does not read: counted and named in the closing line, not silent.
OTHER_IMAGE_EXTENSIONS = {
    ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif", ".jxl",
    ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf",
}  # fmt: skip
# Folders that NAS boxes and desktops fill with their own thumbnails, never frames.
SKIPPED_FOLDERS = {"@eaDir", "#recycle", "#snapshot", "$RECYCLE.BIN", "System Volume Information"}
WARNING_STAGE = "timestamp"
DATE_ORDER_KEY = "name_date_order"  # kv: how the store's names write a date year last
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
    n_new_errors: int = 0  # of `failed`: files that failed in this call
    n_warnings: int = 0  # timestamp warnings (frames still ingested)
    n_untimed: int = 0  # of those: frames no source gave a plausible time
    n_ambiguous: int = 0  # wall-clock times in a DST fall-back hour
    n_missing: int = 0  # wall-clock times in a DST spring-forward gap
    n_moved: int = 0  # unchanged frames whose file moved (root, path updated)
    n_reread: int = 0  # unchanged frames read again: new mtime, same content
    n_reviews_dropped: int = 0  # reviews of changed frames (they judged the old picture)
    n_held: int = 0  # files left for the next pass (`hold`: still being written)
    other_formats: dict[str, int] = field(default_factory=dict)  # skipped pictures by extension
    # (folder, frames, seconds): frames timed by a copy (`store.frames.copied_times`)
    copied_times: list[tuple[str, int, float]] = field(default_factory=list)
    first_error: str = ""  # the first file that failed in this call, "name: message"
    # how day and night were told, where they could be told better (`daylight.daylight_note`):
    # said by the ingest that gives a store its first frames, not by every card or watch pass
    daylight: str = ""
    seconds: float = 0.0
    folder: str = ""

    def describe(self) -> str:
        decoded = self.added + self.changed + self.n_reread + self.n_new_errors
        rate = (
            f", {decoded / self.seconds:.0f} files/s" if decoded >= 100 and self.seconds > 0 else ""
        )
        line = (
            f"ingest {self.folder}: {self.added} added, {self.changed} changed, "
            f"{self.unchanged} unchanged, {self.failed} failed in {self.seconds:.1f} s{rate}"
        )
        extras = []
        if self.failed:
            extras.append("failed files are listed by `python -m pipeline info`")
        if self.n_warnings:
            extras.append(f"{self.n_warnings} timestamp warning(s)")
        if self.n_untimed:
            extras.append(
                f"{self.n_untimed} frame(s) without a plausible time (kept, listed by `info`)"
            )
        if self.n_ambiguous or self.n_missing:
            extras.append(
                f"DST: {self.n_ambiguous} ambiguous and {self.n_missing} "
                "non-existent local time(s) resolved"
            )
        if self.n_moved:
            extras.append(f"{self.n_moved} frame(s) found at a new place (moved)")
        if self.n_reread:
            extras.append(f"{self.n_reread} read again (new mtime, same content)")
        if self.n_held:
            extras.append(f"{self.n_held} still being written (tried again later)")
        if self.other_formats:
            kinds = ", ".join(f"{ext} {n}" for ext, n in sorted(self.other_formats.items()))
            extras.append(
                f"{sum(self.other_formats.values())} picture(s) in formats not read ({kinds}): "
                f"convert them to {pixels.FRAME_FORMATS} to include them"
            )
        if not (self.added + self.changed + self.unchanged + self.failed + self.n_held):
            extras.append(f"no {pixels.FRAME_FORMATS} files were found in this folder or below it")
        extras.extend(copied_times_advice(root, n, span) for root, n, span in self.copied_times)
        if self.changed:
            dropped = (
                f", and {self.n_reviews_dropped} review(s) of the old pictures, recorded in `info`"
                if self.n_reviews_dropped
                else ""
            )
            extras.append(f"changed frames lost their vectors and earlier scores{dropped}")
        if self.daylight:
            extras.append(self.daylight)
        return line + ("; " + "; ".join(extras) if extras else "")

    def note_errors(self, errors: Iterable[tuple[str, str]]) -> None:
        """Count files that failed in this call, (name, message) each; keep the first."""
        errors = list(errors)
        self.failed += len(errors)
        self.n_new_errors += len(errors)
        if errors and not self.first_error:
            self.first_error = "{}: {}".format(*errors[0])

    def nothing_read(self) -> str | None:
        """When this call tried files and could read none of them, why, in one line (the
        command's error: exit 1); None otherwise. Files ingested before, and known bad files
        left alone, do not count: a re-run whose new files all fail says so once."""
        if not self.n_new_errors or self.added + self.changed + self.n_reread:
            return None
        return (
            f"none of the {self.n_new_errors} file(s) tried could be read, the first: "
            f"{self.first_error} (all are listed by `python -m pipeline info`; replace or "
            "remove them and run again)"
        )


@dataclass
class FileEntry:
    os_path: str  # what open() needs (surrogate-escaped str for non-UTF-8 names)
    name: str  # stored path: relative, '/' separators, valid UTF-8
    size: int
    mtime_ns: int
    location: str = ""  # stored text of the absolute path with symlinks resolved
    inode: tuple[int, int] = (0, 0)  # (st_dev, st_ino): the same file under two names


def stored_text(os_text: str) -> str:
    """A file-system string as valid UTF-8 text: undecodable bytes become `\\xNN`."""
    return os.fsencode(os_text).decode("utf-8", errors="backslashreplace")


_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def os_text(stored: str) -> str:
    """The file-system string of a stored text (undoes `stored_text`'s `\\xNN` escapes)."""
    if "\\x" not in stored:
        return stored
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), stored.encode("utf-8"))
    return os.fsdecode(raw)


def frame_file(root: str, path: str) -> Path:
    """The original file of a stored (root, path), undoing `\\xNN` escapes when needed."""
    plain = os.path.join(root, path)
    if "\\x" not in plain or os.path.lexists(plain):
        return Path(plain)
    return Path(os_text(plain))


def folder_root(folder: Path) -> str:
    """The `root` that frames ingested from `folder` are stored with."""
    return stored_text(os.path.abspath(folder))


def pending_files(folder: Path, db: Path, stage: str = "ingest") -> int:
    """How many files under `folder` an ingest would read, move or record as unreadable now,
    from a listing of the folder and a short read-only look at the store (nothing is written:
    `watch` looks before it takes the run lock)."""
    files, problems = walk(os.path.abspath(folder))
    with store.connect(db, read_only=True) as con:
        failed = frames_store.failed_files(con, stage)
        known = frames_store.known_files(con)
    plan = _plan(files, known, failed, IngestSummary())
    recorded = set(failed["location"])
    return len(plan.todo) + len(plan.moves) + sum(loc not in recorded for _, loc, _ in problems)


def ingest_folder(
    folder: Path,
    db: Path,
    settings: Settings,
    progress: bool = True,
    stage: str = "ingest",
    hold: Callable[[FileEntry, imagestats.FrameResult], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IngestSummary:
    """Add new and changed frames in `folder` (recursive) to the store at `db`.

    `hold(entry, result)` true leaves a decoded file out of the store this time (`watch`: a
    file still being written is tried again on the next pass instead of becoming an error or a
    half frame); `should_stop()` true stops after the batch being written (`watch` on SIGTERM).
    """
    with executors.session(settings):  # Ray missing or unreachable: said before the walk
        return _ingest_folder(folder, db, settings, progress, stage, hold, should_stop)


def _ingest_folder(folder, db, settings, progress, stage, hold, should_stop) -> IngestSummary:
    job = start_ingest(folder, db, settings, stage)
    results = _decode_all([job.task(entry) for entry in job.todo], settings, progress, stage)
    entries = {entry.name: entry for entry in job.todo}
    try:
        batch: list[tuple[FileEntry, imagestats.FrameResult]] = []
        last_flush = time.monotonic()
        for result in results:  # in the files' order, or as they finish on a Ray cluster
            entry = entries[result.name]
            if hold is not None and hold(entry, result):
                job.summary.n_held += 1
                continue
            batch.append((entry, result))
            if len(batch) >= settings.ingest_batch_size or (
                time.monotonic() - last_flush >= FLUSH_SECONDS
            ):
                job.writer.write(batch)
                batch = []
                last_flush = time.monotonic()
                if should_stop is not None and should_stop():
                    break
        if batch:
            job.writer.write(batch)
    finally:
        results.close()  # the workers stop and the progress bar ends its line before any error
    return job.finish()


@dataclass
class IngestJob:
    """An ingest that is planned, and whose problems and moves are written: `todo` are the
    files to read, `writer` commits their results (`writer.write(batch)`, one short
    transaction per batch), `finish()` closes it and returns the summary. `ingest_folder`
    runs one; `run`'s one pass (`pipeline.onepass`) runs one with the model beside it."""

    db: Path
    settings: Settings
    todo: list[FileEntry]
    writer: "_BatchWriter"
    summary: IngestSummary
    started: float
    # how the folder's names write a date year last (`timestamps.date_order`, from every name
    # the walk found, read before or not: one order for the whole card)
    date_order: str | None = None
    first_frames: bool = False  # the store had no frames before this ingest

    def task(self, entry: FileEntry, model_size: int | None = None) -> imagestats.FrameTask:
        """What a worker needs to read one file (`imagestats.read_frame`)."""
        return imagestats.FrameTask(
            entry.os_path,
            entry.name,
            entry.size,
            entry.mtime_ns,
            self.settings.thumbnail_size,
            self.settings.max_image_pixels,
            self.settings.max_file_bytes,
            model_size,
            self.date_order,
        )

    def finish(self) -> IngestSummary:
        if self.summary.n_ambiguous:
            # the fall-back hour is resolved by frame order across the whole store
            daylight.recompute(self.db, self.settings)
        elif self.writer.where.by_brightness:
            # daylight by brightness: the store's own day floor may have moved with these frames
            daylight.settle_day_luma(self.db, self.settings)
        with store.connect(self.db) as con:
            self.summary.copied_times = frames_store.copied_times(con)
            if self.first_frames and self.summary.added:
                self.summary.daylight = daylight.daylight_note(daylight.stored_place(con))
        self.summary.seconds = time.monotonic() - self.started
        return self.summary


def start_ingest(folder: Path, db: Path, settings: Settings, stage: str = "ingest") -> IngestJob:
    """Check, walk and plan an ingest of `folder`; write what the walk found unreadable and the
    frames that moved. Nothing is decoded yet."""
    started = time.monotonic()
    folder = Path(folder)
    check_folder(folder)
    daylight.check_place(settings)
    root = folder_root(folder)
    summary = IngestSummary(folder=str(folder))
    with store.connect(db) as con:  # a store that is not ours, or a bad place: before the walk
        daylight.check_same_place(con, settings, db)
        where = daylight.place(con, settings)
        first_frames = not embeddings_store.count_frames(con)
    try:
        files, problems = walk(os.path.abspath(folder), summary.other_formats)
    except OSError as exc:
        raise InputError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    with store.connect(db) as con:
        plan = _plan(
            files, frames_store.known_files(con), frames_store.failed_files(con, stage), summary
        )
        # one order per store: a later card whose days are all the 12th or before keeps it
        order = date_order(entry.name for entry in files) or kv.get(con, DATE_ORDER_KEY)
        kv.put(con, DATE_ORDER_KEY, order)
    del files

    writer = _BatchWriter(db, root, stage, where, settings, plan.existing, summary)
    if problems or plan.moves:
        writer.write_problems_and_moves(problems, plan.moves)
    return IngestJob(Path(db), settings, plan.todo, writer, summary, started, order, first_frames)


def walk(
    root: str, other_formats: dict[str, int] | None = None
) -> tuple[list[FileEntry], list[tuple[str, str, str]]]:
    """Image files under `root` in sorted order, and (name, location, message) for what could
    not be read. Pictures in formats ingest does not read (`OTHER_IMAGE_EXTENSIONS`) are
    counted by extension into `other_formats` when given.

    Folder links are followed unless they lead back into a folder being walked (a loop); a
    file reached twice (through a folder link, or a second hard link) is listed once.
    Hidden entries and NAS thumbnail folders are skipped. Each file's `location` is its
    absolute path with symlinks resolved, computed once per folder.
    """
    files: list[FileEntry] = []
    problems: list[tuple[str, str, str]] = []
    root_stat = os.stat(root)
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, str, str, frozenset]] = [
        (root, os.path.realpath(root), "", frozenset({_key(root_stat)}))
    ]
    while stack:
        folder, real, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            problems.append(
                (
                    stored_text(prefix.rstrip("/") or "."),
                    stored_text(real),
                    f"cannot list the folder: {exc.strerror or exc}",
                )
            )
            continue
        subfolders = []
        for entry in entries:
            name = entry.name
            rel = prefix + name
            if name.startswith(".") or name in SKIPPED_FOLDERS:
                continue
            where = os.path.join(real, name)
            try:
                is_dir = entry.is_dir()
            except OSError as exc:
                is_dir = False
                if _is_image_name(name):
                    problems.append(
                        (stored_text(rel), stored_text(where), imagestats.describe_os_error(exc))
                    )
                    continue
            if is_dir:
                try:
                    key = _key(os.stat(entry.path))
                except OSError as exc:
                    problems.append(
                        (stored_text(rel), stored_text(where), imagestats.describe_os_error(exc))
                    )
                    continue
                if key in ancestors:
                    problems.append(
                        (
                            stored_text(rel),
                            stored_text(where),
                            "symlink loop: this "
                            "folder link points back to a folder that contains it; "
                            "skipped",
                        )
                    )
                    continue
                real_sub = os.path.realpath(entry.path) if entry.is_symlink() else where
                subfolders.append((entry.path, real_sub, rel + "/", ancestors | {key}))
                continue
            if not _is_image_name(name):
                ext = os.path.splitext(name)[1].lower()
                if other_formats is not None and ext in OTHER_IMAGE_EXTENSIONS:
                    other_formats[ext] = other_formats.get(ext, 0) + 1
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                problems.append(
                    (stored_text(rel), stored_text(where), imagestats.describe_os_error(exc))
                )
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append((stored_text(rel), stored_text(where), "not a regular file"))
                continue
            if _key(st) in seen:
                continue  # the same file again: one frame
            seen.add(_key(st))
            if entry.is_symlink():
                where = os.path.realpath(entry.path)
            files.append(
                FileEntry(
                    entry.path,
                    stored_text(rel),
                    st.st_size,
                    st.st_mtime_ns,
                    stored_text(where),
                    _key(st),
                )
            )
        stack.extend(reversed(subfolders))
    files.sort(key=lambda f: f.name.encode("utf-8"))
    return files, problems


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSIONS


@dataclass
class _Plan:
    """What an ingest will do with each walked file, decided before anything is decoded."""

    todo: list[FileEntry] = field(default_factory=list)  # to decode
    existing: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # location ->
    # (frame_id, stored content hash) of todo files that are known frames with a new mtime
    moves: list[tuple[int, FileEntry]] = field(default_factory=list)  # frame_id, its new place


def _plan(
    files: list[FileEntry], known: pd.DataFrame, failed: pd.DataFrame, summary: IngestSummary
) -> _Plan:
    """Match walked files to known frames by location; find moved files; skip failed ones.

    A file at a known location with the same size and mtime is unchanged; with another size or
    mtime it is decoded again (its content hash then tells a changed picture from a touch). A
    file at a new location is a frame that moved when a known frame has the same name, size
    and mtime and that frame's old file is gone (or is this very file, reached by another
    path); otherwise it is a new frame, even with a known name: cameras number every card
    from IMG_0001 again.
    """
    plan = _Plan()
    by_location = {
        loc: (int(i), int(b), int(m), h)
        for loc, i, b, m, h in zip(
            known["location"],
            known["frame_id"],
            known["file_bytes"],
            known["mtime_us"],
            known["content_hash"],
        )
    }
    failed_map = {
        loc: (b, m)
        for loc, b, m in zip(failed["location"], failed["file_bytes"], failed["mtime_us"])
    }
    unmatched: list[FileEntry] = []
    seen: set[str] = set()
    for entry in files:
        mtime_us = entry.mtime_ns // 1000
        frame = by_location.get(entry.location)
        if frame is not None:
            seen.add(entry.location)
            if frame[1] == entry.size and frame[2] == mtime_us:
                summary.unchanged += 1
            else:
                plan.existing[entry.location] = (frame[0], None if pd.isna(frame[3]) else frame[3])
                plan.todo.append(entry)
            continue
        previous = failed_map.get(entry.location)
        if previous is not None and _same(previous, entry.size, mtime_us):
            summary.failed += 1
            continue
        unmatched.append(entry)
    if unmatched and len(known):
        plan.moves, aliases = _find_moves(unmatched, known[~known["location"].isin(seen)])
        found = {entry.location for _, entry in plan.moves} | {e.location for e in aliases}
        unmatched = [entry for entry in unmatched if entry.location not in found]
        summary.unchanged += len(found)
        summary.n_moved += len(plan.moves)
    plan.todo.extend(unmatched)
    plan.todo.sort(key=lambda f: f.name.encode("utf-8"))
    return plan


def _find_moves(
    unmatched: list[FileEntry], others: pd.DataFrame
) -> tuple[list[tuple[int, FileEntry]], list[FileEntry]]:
    """Unmatched files that are known frames: (moves, aliases).

    A move is a file with a known frame's name, size and mtime whose old file is gone; an
    alias is a file that *is* a known frame's file under another name (a second hard link:
    same device and inode), whatever its name. A frame is claimed once.
    """
    candidates: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
    for frame_id, loc, path, size, mtime in zip(
        others["frame_id"],
        others["location"],
        others["path"],
        others["file_bytes"],
        others["mtime_us"],
    ):
        candidates.setdefault((int(size), int(mtime)), []).append((int(frame_id), loc, path))
    moves: list[tuple[int, FileEntry]] = []
    aliases: list[FileEntry] = []
    claimed: set[int] = set()
    for entry in unmatched:
        options = [
            c
            for c in candidates.get((entry.size, entry.mtime_ns // 1000), ())
            if c[0] not in claimed
        ]
        base = entry.name.rsplit("/", 1)[-1]
        # the same name first, and among those a stored path that ends like this one's
        options.sort(
            key=lambda c: (
                c[2].rsplit("/", 1)[-1] != base,
                not (entry.name.endswith(c[2]) or c[2].endswith(entry.name)),
            )
        )
        for frame_id, loc, path in options:
            state = _old_file(loc, entry.inode)
            if state == "same":
                aliases.append(entry)
            elif state == "gone" and path.rsplit("/", 1)[-1] == base:
                moves.append((frame_id, entry))
            else:
                continue
            claimed.add(frame_id)
            break
    return moves, aliases


def _old_file(location: str, inode: tuple[int, int]) -> str:
    """'gone', 'same' (it is the file with this inode) or 'other' (a different file)."""
    try:
        return "same" if _key(os.stat(os_text(location))) == inode else "other"
    except FileNotFoundError:
        return "gone"
    except OSError:
        return "other"


def _same(previous: tuple, size: int, mtime_us: int) -> bool:
    b, m = previous
    return not pd.isna(b) and not pd.isna(m) and int(b) == size and int(m) == mtime_us


def _decode_all(
    tasks: list[imagestats.FrameTask], settings: Settings, progress: bool, stage: str
) -> Iterator[imagestats.FrameResult]:
    """Decode results in `tasks` order: a process pool for real jobs, inline for tiny ones."""
    from tqdm import tqdm

    bar = tqdm(
        total=len(tasks),
        unit="frame",
        desc=stage,
        file=sys.stderr,
        disable=not progress or not tasks,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    workers = max(1, min(int(settings.workers), len(tasks)))
    try:
        if settings.executor == "ray" and tasks:
            executor = executors.choose(
                settings,
                None,
                path_of=_task_path,
                setup=partial(pixels.configure, settings.max_image_pixels),
            )
            for results in executor.map_batches([tasks], imagestats.read_frame, None):
                yield from results
                bar.update(len(results))
            return
        if workers == 1 or len(tasks) < POOL_MIN_FILES:
            pixels.configure(settings.max_image_pixels)
            for task in tasks:
                yield imagestats.read_frame(task)
                bar.update()
            return
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pipeline.imagestats"])
        chunksize = max(1, min(32, len(tasks) // (workers * 16)))
        with context.Pool(
            workers, initializer=imagestats.configure_worker, initargs=(settings.max_image_pixels,)
        ) as pool:
            for result in pool.imap(imagestats.read_frame, tasks, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()


def _task_path(task: imagestats.FrameTask) -> str:
    return task.os_path


class _BatchWriter:
    """Turns worker results into rows and writes each batch in one short transaction."""

    def __init__(
        self,
        db: Path,
        root: str,
        stage: str,
        where: daylight.Place,
        settings: Settings,
        existing: dict[str, tuple[int, str | None]],
        summary: IngestSummary,
    ):
        self.db, self.root, self.stage, self.where = db, root, stage, where
        self.settings, self.existing, self.summary = settings, existing, summary

    def write_problems_and_moves(
        self, problems: list[tuple[str, str, str]], moves: list[tuple[int, FileEntry]]
    ) -> None:
        errors = _error_rows(
            [(name, loc, self.stage, message, None, None) for name, loc, message in problems],
            self.root,
        )
        relocated = pd.DataFrame(
            {
                "frame_id": pd.Series([frame_id for frame_id, _ in moves], dtype="int64"),
                "root": self.root,
                "path": pd.Series([entry.name for _, entry in moves], dtype=object),
                "location": pd.Series([entry.location for _, entry in moves], dtype=object),
            }
        )
        with store.connect(self.db) as con:
            frames_store.write_batch(
                con,
                frames_store.FrameBatch(
                    _empty_frames(), _empty_frames(), _empty_frames(), _empty_thumbs(), errors
                ),
            )
            frames_store.relocate(con, relocated)
        self.summary.note_errors((name, message) for name, _, message in problems)

    def write(self, batch: list[tuple[FileEntry, imagestats.FrameResult]]) -> list[int | None]:
        """Commit one batch of results; returns each one's frame_id (None for a failed file)."""
        good = [(e, r) for e, r in batch if r.error is None]
        bad = [(e, r) for e, r in batch if r.error is not None]
        warned = [(e, r) for e, r in good if r.time.warning]
        errors = _error_rows(
            [(r.name, e.location, self.stage, r.error, r.file_bytes, r.mtime_ns) for e, r in bad]
            + [
                (r.name, e.location, WARNING_STAGE, r.time.warning, r.file_bytes, r.mtime_ns)
                for e, r in warned
            ],
            self.root,
        )
        kinds = [self._kind(e, r) for e, r in good]
        with store.connect(self.db) as con:
            fresh = iter(frames_store.new_frame_ids(con, kinds.count("new")))
            ids = [
                next(fresh) if kind == "new" else self.existing[e.location][0]
                for (e, _), kind in zip(good, kinds)
            ]
            rows = self._frame_rows(good, ids)
            kind_of = pd.Series(kinds, dtype=object, index=rows.index)
            thumbs = pd.DataFrame(
                {
                    "frame_id": pd.Series(ids, dtype="int64"),
                    "jpeg": pd.Series([r.thumbnail for _, r in good], dtype=object),
                    "width": pd.Series([r.thumb_width for _, r in good], dtype="int32"),
                    "height": pd.Series([r.thumb_height for _, r in good], dtype="int32"),
                }
            )
            n_reviews = frames_store.write_batch(
                con,
                frames_store.FrameBatch(
                    rows[kind_of == "new"],
                    rows[kind_of == "changed"],
                    rows[kind_of == "reread"],
                    thumbs,
                    errors,
                    [e.location for e, _ in batch],
                    [self.stage, WARNING_STAGE],
                ),
            )
        self.summary.added += kinds.count("new")
        self.summary.changed += kinds.count("changed")
        self.summary.n_reread += kinds.count("reread")
        self.summary.unchanged += kinds.count("reread")
        self.summary.n_reviews_dropped += n_reviews
        self.summary.note_errors((r.name, r.error) for _, r in bad)
        self.summary.n_warnings += len(warned)
        self.summary.n_untimed += sum(r.time.source == "none" for _, r in good)
        self.summary.frame_ids.extend(i for i, kind in zip(ids, kinds) if kind != "reread")
        id_of = {id(r): frame_id for (_, r), frame_id in zip(good, ids)}
        return [id_of.get(id(r)) for _, r in batch]

    def _kind(self, entry: FileEntry, result: imagestats.FrameResult) -> str:
        """'new', 'changed' (other pixels at a known place) or 'reread' (same bytes, new mtime)."""
        known = self.existing.get(entry.location)
        if known is None:
            return "new"
        return "reread" if known[1] == result.content_hash else "changed"

    def _frame_rows(
        self, good: list[tuple[FileEntry, imagestats.FrameResult]], ids: list[int]
    ) -> pd.DataFrame:
        results = [r for _, r in good]
        base = pd.DataFrame(
            {
                "frame_id": pd.Series(ids, dtype="int64"),
                "path": pd.Series([r.name for r in results], dtype=object),
                "root": self.root,
                "location": pd.Series([e.location for e, _ in good], dtype=object),
                "width": pd.Series([r.width for r in results], dtype="int32"),
                "height": pd.Series([r.height for r in results], dtype="int32"),
                "file_bytes": pd.Series([r.file_bytes for r in results], dtype="int64"),
                "file_mtime": _mtimes([r.mtime_ns for r in results]),
                "content_hash": pd.Series([r.content_hash for r in results], dtype=object),
            }
        ).join(time_rows(results))
        timed = daylight.compute_times(base, self.where, self.settings)
        self.summary.n_ambiguous += timed.n_ambiguous
        self.summary.n_missing += timed.n_missing
        for column in frames_store.TIME_COLUMNS:
            base[column] = timed.times[column]
        return base[["frame_id", *frames_store.FRAME_COLUMNS]]


def time_rows(results: list[imagestats.FrameResult]) -> pd.DataFrame:
    """Decoded frames' time as their sources gave it (taken_at, source_utc, time_source) and
    their image statistics: what `daylight.compute_times` turns into stored times and daylight
    (`serve` builds its uploads' frame rows from it too)."""
    nat = pd.NaT
    return pd.DataFrame(
        {
            "taken_at": pd.Series([r.time.local or nat for r in results], dtype="datetime64[us]"),
            "source_utc": pd.Series(
                [r.time.instant or nat for r in results], dtype="datetime64[us, UTC]"
            ),
            "time_source": pd.Series([r.time.source for r in results], dtype=object),
            "mean_luma": pd.Series([r.stats.mean_luma for r in results], dtype="float64"),
            "contrast": pd.Series([r.stats.contrast for r in results], dtype="float64"),
            "sharpness": pd.Series([r.stats.sharpness for r in results], dtype="float64"),
            "colorfulness": pd.Series([r.stats.colorfulness for r in results], dtype="float64"),
            "local_contrast": pd.Series([r.local_contrast for r in results], dtype="float64"),
            "sharpness_cells": pd.Series([r.sharpness_cells for r in results], dtype=object),
        }
    )


def _error_rows(rows: list[tuple], root: str) -> pd.DataFrame:
    """(path, location, stage, message, file bytes, mtime ns) tuples as `ingest_errors` rows."""
    return pd.DataFrame(
        {
            "path": pd.Series([r[0] for r in rows], dtype=object),
            "location": pd.Series([r[1] for r in rows], dtype=object),
            "stage": pd.Series([r[2] for r in rows], dtype=object),
            "message": pd.Series([r[3] for r in rows], dtype=object),
            "root": root,
            "file_bytes": pd.array([r[4] for r in rows], dtype="Int64"),
            "file_mtime": _mtimes([r[5] for r in rows]),
        }
    )


def _mtimes(mtime_ns: Iterable[int | None]) -> pd.Series:
    values = [None if m is None else int(m) // 1000 for m in mtime_ns]
    return pd.Series(
        pd.to_datetime(pd.Series(values, dtype="Int64"), unit="us", utc=True),
        dtype="datetime64[us, UTC]",
    )


def _empty_frames() -> pd.DataFrame:
    return pd.DataFrame(columns=["frame_id", *frames_store.FRAME_COLUMNS])


def _empty_thumbs() -> pd.DataFrame:
    return pd.DataFrame(columns=["frame_id", "jpeg", "width", "height"])
