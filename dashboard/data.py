"""The dashboard's data access: cached calls into the store readers, review writes, originals.

Every query opens a read-only connection (`store.connect(db, read_only=True)`) and closes it;
results are cached with `st.cache_data(ttl=...)`, keyed by the store file's modification
stamp, so a pipeline run or a review shows up on the next rerun. Connections are never cached.
While the pipeline holds the write lock, `store.StoreLockedError` reaches the app, which shows
its message and retries. Review writes take a short write connection.

A reader call with other junk causes than the run's (`FrameFilter.junk_causes`, or a reader's
`junk_causes` argument) reads the consensus of those causes materialised once per store stamp,
run and causes (`store.causes.cached`: the recombined scores, incidents and the run's
aggregates for them, built on the call's own read-only connection and kept in this process)
through `store.causes.shadow`, called as for the run's own causes; so those pages cost what
the run's own do. When it cannot be materialised (or `TIMELAPSE_CONSENSUS_CACHE=0`), the
call recombines in SQL (`store.causes.with_causes`), which gives the same rows.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import streamlit as st

import store
from store import causes, facts, reviews
from store.export import file_path

ENV_DB = "TIMELAPSE_DB"
ENV_LOCK_WAIT = "TIMELAPSE_LOCK_WAIT_S"
CACHE_TTL_S = 300
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}  # as ingest reads


def db_path(argv: list[str] | None = None) -> Path | None:
    """The store file: `--db FILE` after `streamlit run dashboard/app.py --`, else $TIMELAPSE_DB."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    value = known.db or os.environ.get(ENV_DB)
    return Path(value).expanduser() if value else None


def lock_wait_s() -> float:
    """How long one query waits for the pipeline's lock before the app shows a notice."""
    try:
        return max(0.1, float(os.environ.get(ENV_LOCK_WAIT, "4")))
    except ValueError:
        return 4.0


class _Gate:
    """Readers share, a writer is alone: DuckDB refuses a read-write open in a process that has
    the same file open read-only, and Streamlit serves sessions from threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


_GATE = _Gate()


class Reader:
    """Calls `store.facts` functions, each on its own short read-only connection."""

    def __init__(self, db: str | os.PathLike, lock_wait_s: float = 4.0) -> None:
        self.db = Path(db)
        self.lock_wait_s = lock_wait_s

    def call(self, name: str, *args: Any) -> Any:
        return self.call_many(((name, tuple(args)),))[0]

    def call_many(self, calls: tuple[tuple[str, tuple], ...]) -> list[Any]:
        """Several readers on one short connection (opening the file costs more than most
        queries): a page asks for what it draws in one go."""
        with _GATE.read():
            with store.connect(self.db, read_only=True, timeout=self.lock_wait_s) as con:
                shadows = _Shadows(con)
                return [self._one(con, shadows, name, args) for name, args in calls]

    def _one(self, con, shadows: "_Shadows", name: str, args: tuple) -> Any:
        """`facts.<name>(con, *args)`; with other junk causes, on their materialised
        consensus (the calls of a page that choose the same share one shadow)."""
        fn = getattr(facts, name)
        run_id, chosen, plain = _causes_of(fn, args)
        made = causes.cached(con, self.db, stamp(self.db), run_id, chosen) if chosen else None
        shadows.use(made)
        if made is None:
            return fn(con, *args)  # the run's own, or recombined in SQL
        return fn(con, *plain.args[1:], **plain.kwargs)

    def set_verdicts(self, ids: list[int], verdict: str | None, note: str | None = None) -> int:
        with _GATE.write():
            with store.connect(self.db, timeout=self.lock_wait_s) as con:
                return reviews.set_verdicts(con, ids, verdict, note)

    def mark(self, ids: list[int], verdict: str | None) -> tuple[int, Any]:
        with _GATE.write():
            with store.connect(self.db, timeout=self.lock_wait_s) as con:
                return reviews.mark(con, ids, verdict)

    def restore(self, ids: list[int], before: Any) -> int:
        with _GATE.write():
            with store.connect(self.db, timeout=self.lock_wait_s) as con:
                return reviews.restore(con, ids, before)


class _Shadows:
    """The materialised consensus a connection reads now (`causes.install`), changed only
    when a call asks for another one; left for the connection's close to remove."""

    def __init__(self, con) -> None:
        self.con = con
        self.made: causes.Consensus | None = None

    def use(self, made: "causes.Consensus | None") -> None:
        if made is self.made:
            return
        if self.made is not None:
            causes.uninstall(self.con)
            self.made = None
        if made is not None:
            causes.install(self.con, made)
            self.made = made


def _causes_of(
    fn, args: tuple
) -> tuple[int | None, tuple[str, ...], inspect.BoundArguments | None]:
    """The run and junk causes a reader call asks for (a `FrameFilter` argument's
    `junk_causes`, or a `junk_causes` argument beside `run_id`), and the call's arguments with
    them emptied (the run's own consensus, which `causes.shadow` replaces)."""
    try:
        bound = inspect.signature(fn).bind(None, *args)
    except TypeError:  # the call itself says what is wrong
        return None, (), None
    run_id, chosen = None, ()
    for name, value in bound.arguments.items():
        if isinstance(value, facts.FrameFilter) and value.junk_causes:
            run_id, chosen = value.run_id, tuple(value.junk_causes)
            bound.arguments[name] = value.replace(junk_causes=())
        elif name == "junk_causes" and value:
            run_id, chosen = bound.arguments.get("run_id"), tuple(value)
            bound.arguments[name] = ()
    if run_id is None:
        return None, (), bound
    return int(run_id), chosen, bound


def stamp(db: Path) -> tuple:
    """Changes whenever the store file (or its WAL) is written: part of every cache key."""
    out: list[Any] = []
    for p in (db, db.with_name(db.name + ".wal")):
        try:
            s = p.stat()
            out += [s.st_mtime_ns, s.st_size]
        except FileNotFoundError:
            out += [0, 0]
    return tuple(out)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=512)
def _cached(db: str, file_stamp: tuple, wait: float, calls: tuple) -> list[Any]:
    return Reader(db, wait).call_many(calls)


def get(name: str, *args: Any) -> Any:
    """Cached result of `store.facts.<name>(con, *args)` for the dashboard's store."""
    return get_many((name, *args))[0]


def get_many(*calls: tuple) -> list[Any]:
    """Cached results of several `(name, *args)` reader calls, made on one connection."""
    db = current_db()
    key = tuple((call[0], tuple(call[1:])) for call in calls)
    return _cached(str(db), stamp(db), lock_wait_s(), key)


def thumbs_of(rows) -> dict[int, bytes]:
    """The `thumb` column of a page of frames (readers called with `thumbs=True`) as the
    frame id -> JPEG dict `ui.thumb_grid` takes."""
    if rows is None or "thumb" not in getattr(rows, "columns", ()):
        return {}
    return {int(f): t for f, t in zip(rows["frame_id"], rows["thumb"]) if t is not None}


def current_db() -> Path:
    db = st.session_state.get("_db_path")
    if db is None:
        db = db_path()
    return Path(db)


def set_verdicts(ids: list[int], verdict: str | None, note: str | None = None) -> int:
    """Write verdicts (the only write the dashboard makes); the cache key changes with the file."""
    return _write(len(ids), lambda reader: reader.set_verdicts(ids, verdict, note))


def mark_undoably(ids: list[int], verdict: str | None) -> tuple[int, Any]:
    """`set_verdicts`, returning also the reviews it replaced, for `restore_reviews`."""
    return _write(len(ids), lambda reader: reader.mark(ids, verdict))


def restore_reviews(ids: list[int], before: Any) -> int:
    """Put back the reviews `mark_undoably` replaced."""
    return _write(len(ids), lambda reader: reader.restore(ids, before))


def _write(n_ids: int, write) -> Any:
    """One review write on a short connection; lock and disk problems become store errors
    whose message says nothing was saved."""
    try:
        done = write(Reader(current_db(), lock_wait_s()))
    except store.StoreLockedError as exc:
        raise store.StoreLockedError(
            f"Not saved ({n_ids} verdicts): {exc} Mark the frames again once it is free."
        ) from exc
    except Exception as exc:  # a full or read-only disk: a notice, not a crashed page
        problem = store.db.disk_error(exc)
        if problem is None:
            raise
        raise store.StoreError(f"Not saved ({n_ids} verdicts): {problem}") from exc
    _cached.clear()
    return done


def original_path(root: str | None, rel: str | None) -> Path | None:
    """The original image file of a frame when it is reachable and safely inside its root.

    The path comes from the store (never from the URL); it is resolved (symlinks followed) and
    refused if it escapes `root`, is not a regular file or is not an image by suffix. A name
    that was not valid UTF-8 (stored with `\\xNN` escapes) is found under its real bytes.
    """
    if not root or not rel:
        return None
    try:
        base = Path(file_path(root)).resolve(strict=True)
        candidate = Path(file_path(os.path.join(root, rel))).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    if candidate.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return candidate


def original_bytes(root: str | None, rel: str | None) -> bytes | None:
    """The bytes of `original_path`, or None when it is not there or cannot be read (the
    file name may not be valid UTF-8, so the page is given bytes, not a name)."""
    path = original_path(root, rel)
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None
