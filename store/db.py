"""Opening the store: one `connect()` for everyone, lock retries, typed errors, the run lock.

DuckDB allows one read-write process or several read-only ones, never both. Nobody holds the
file open for long; `connect()` retries while another process holds it and then raises
`StoreLockedError`, whose message names the file, the holder and what to do. A pipeline run also
takes `writer_lock()` for its whole duration, so two runs never interleave their short
connections.

DuckDB's file locks are POSIX record locks, held per process: closing any descriptor of the
store file in this process lets go of the lock every open connection to it holds. So the file
is opened by one DuckDB instance per process, under one name whatever the spelling (its first
`connect()` checks the file's first bytes, later ones read nothing), and nothing else in the
process opens it while a connection may be open (`store.causes` builds on a cursor, not a
second open). Writers come first: a writer refused by readers holds new readers off while it
retries (`_WaitGate`, an flock on `<store>.wait`), so overlapping readers cannot keep it out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import duckdb

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# How long connect() retries a locked file before giving up (env TIMELAPSE_LOCK_TIMEOUT_S).
LOCK_TIMEOUT_S = float(os.environ.get("TIMELAPSE_LOCK_TIMEOUT_S", "10"))


class StoreError(Exception):
    """Base class for problems with the store that a user can act on."""


class StoreLockedError(StoreError):
    """Another process holds the DuckDB file (or the pipeline run lock)."""


class StoreBusyError(StoreLockedError):
    """Another pipeline run is writing to this store."""


class SchemaError(StoreError):
    """The file's schema is newer than this code, or not a store at all."""


class StoreNotFoundError(StoreError):
    """A read-only open of a store file that does not exist."""


# Every connection the product opens: DuckDB must never fetch or load an extension by itself
# (opening a SQLite file as a store would otherwise download `sqlite_scanner` and read it).
CONNECT_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

# What a file starts with, for a refusal that names what it is.
_DUCKDB_MAGIC = (8, b"DUCK")
_OTHER_FILES = [
    (b"SQLite format 3\x00", "a SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"PK\x03\x04", "a zip file"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
]


def check_file_type(path: Path) -> None:
    """Refuse, before DuckDB opens it, a file at `path` that is not a DuckDB database."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise StoreError(f"{path} is a folder: give --db a file name, e.g. {path}/garden.duckdb")
    except OSError as exc:
        raise StoreError(f"cannot read the store {path}: {exc.strerror or exc}") from None
    at, magic = _DUCKDB_MAGIC
    if head[at : at + len(magic)] == magic:
        return
    what = next((name for start, name in _OTHER_FILES if head.startswith(start)), None)
    if not head:
        what = "an empty file"
    raise SchemaError(
        f"{path} is {what or 'not a DuckDB database'}, not a store of this tool; "
        "nothing was changed. Give --db a new file name (or the store you meant)."
    )


_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>\S+) \(PID (?P<pid>\d+)\)")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def _locked_message(path: Path, exc: Exception, waited: float) -> str:
    match = _HOLDER.search(str(exc))
    holder = f"process {match['pid']} ({match['exe']})" if match else "another process"
    return (
        f"the store {path} is locked by {holder}; waited {waited:.0f} s. "
        "It is a pipeline run writing to the store, or another program that holds it open (a "
        "notebook, the duckdb shell): wait for it to finish, or close or stop it, then try "
        "again (DuckDB allows one writer or several readers at a time)."
    )


def connect(
    path: str | os.PathLike,
    read_only: bool = False,
    timeout: float | None = None,
    migrate: bool = True,
) -> duckdb.DuckDBPyConnection:
    """Open the store, retrying on DuckDB's lock error with backoff.

    A read-write open creates the file if needed and applies pending migrations; a read-only
    open only checks that the schema is one this code knows. Use it as a context manager so the
    connection is closed quickly: ``with store.connect(db) as con: ...``.
    """
    from store import migrations  # local import: migrations imports this module's errors

    path = Path(path)
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    if read_only and not path.exists():
        raise StoreNotFoundError(
            f"no store at {path}: create it with `python -m pipeline ingest FOLDER --db {path}`"
            " or `python -m pipeline demo`."
        )
    if not read_only and not path.parent.exists():
        raise StoreError(f"the folder for the store {path} does not exist: create {path.parent}")
    name = _duckdb_name(path)
    deadline = time.monotonic() + timeout
    delay = 0.05
    started = time.monotonic()
    with _WaitGate(name) as gate:
        while True:
            try:
                if read_only:
                    gate.let_writers_first(deadline, path)
                con = duckdb.connect(name, read_only=read_only, config=CONNECT_CONFIG)
                break
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    _forget(name)
                    check_file_type(path)  # refused: no connection of ours holds it; say what
                    raise StoreError(f"cannot open the store {path}: {exc}{_hint(exc)}") from exc
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        _locked_message(path, exc, time.monotonic() - started)
                    ) from exc
                if not read_only:
                    gate.wait_as_writer()
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
    _seen(name)  # a store this call created
    try:
        if read_only:
            migrations.check(con, path)
        elif migrate:
            migrations.migrate(con, path)
        else:
            migrations.check_ours(con, path)
    except duckdb.IOException as exc:  # opened, but its pages cannot be read: cut short
        con.close()
        raise StoreError(f"cannot read the store {path}: {exc}{_hint(exc)}") from exc
    except BaseException:
        con.close()
        raise
    return con


def _hint(exc: Exception) -> str:
    """What to do about DuckDB's error when it says the file ends too soon."""
    if "Could not read enough bytes" in str(exc):
        return " (the file is damaged or cut short: restore it from a copy)"
    return ""


class _WaitGate:
    """Writers first: DuckDB lets a writer in only when no reader holds the file, and readers
    that keep overlapping (pages of a busy dashboard, a long consensus build) would keep one
    out forever. A writer refused by readers takes an exclusive flock on `<store>.wait` while
    it retries; a reader about to open waits while that flock is held (a shared flock taken
    for the moment of its open), so the readers already in finish, the writer gets in, and the
    readers follow it. flock, not fcntl: it is another file's lock, and closing its descriptor
    lets go of nothing on the store. The first writer that has to wait makes the file (and it
    stays); until then, or where it cannot be made (a read-only folder: no writer), readers
    find no gate and open as before."""

    def __init__(self, name: str):
        self.path = name + ".wait"
        self.fd: int | None = None
        self.writing = False

    def __enter__(self) -> "_WaitGate":
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # lets go of a writer's wait
            self.fd = None

    def _open(self, create: bool) -> int | None:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | (os.O_CREAT if create else 0), 0o644)
            except OSError:  # no writer ever waited (a reader), or a read-only folder
                return None
        return self.fd

    def wait_as_writer(self) -> None:
        """Hold new readers off until this writer is in (or gives up)."""
        if self.writing or (fd := self._open(create=True)) is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.writing = True
        except OSError:
            pass  # another writer waits already: readers are held off all the same

    def let_writers_first(self, deadline: float, path: Path) -> None:
        """Return once no writer waits, taking nothing; past `deadline`, `StoreLockedError`."""
        if (fd := self._open(create=False)) is None:
            return
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"the store {path} is being written: a pipeline run is waiting to write "
                        f"to it (waited {time.monotonic() - started:.0f} s); try again in a "
                        "moment."
                    ) from None
                time.sleep(0.02)


# Each store file this process has opened, by (device, inode): the name DuckDB opened it by.
# A file is checked (`check_file_type`, which reads its first bytes) only the first time: every
# later open of it, under any name, uses that name and reads nothing. DuckDB's file locks are
# POSIX record locks, held per process, so closing any descriptor of the file (a header read,
# a second DuckDB instance under another name) lets go of the locks of the connections still
# open on it, and a writer in another process could open the store under a reader.
_OPENED: dict[tuple[int, int], str] = {}
_OPENED_GUARD = threading.Lock()


def _identity(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _duckdb_name(path: Path) -> str:
    """The name to hand DuckDB for the store at `path`: the name this process first opened the
    same file by (relative or absolute, through symlinks or hard links), so every connection
    to one file shares one DuckDB instance; a file met for the first time is checked
    (`check_file_type`) and its resolved path becomes that name."""
    real = os.path.realpath(path)
    with _OPENED_GUARD:
        key = _identity(real)
        if key is None:  # a new store (DuckDB creates it), or DuckDB says what is wrong
            return real
        known = _OPENED.get(key)
        if known is not None and _identity(known) == key:
            return known
        check_file_type(path)
        _OPENED[key] = real
        return real


def _seen(name: str) -> None:
    key = _identity(name)
    if key is not None:
        with _OPENED_GUARD:
            _OPENED.setdefault(key, name)


def _forget(name: str) -> None:
    with _OPENED_GUARD:
        for key in [k for k, v in _OPENED.items() if v == name]:
            del _OPENED[key]


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the pipeline's run lock for a whole run, or fail at once with `StoreBusyError`.

    DuckDB's own lock is held only while a connection is open; this lock keeps a second
    pipeline run from interleaving its batches with ours. It is taken on the real file however
    `--db` was spelled: an flock on `<store, symlinks resolved>.lock` (which also holds the
    holder's PID for the message) and, once the store exists, an flock on the store file itself,
    so a second name for it (a hard link) is refused too. The OS releases both if we are
    killed. Re-entrant within a process: a stage that takes it inside `run` just goes on.
    """
    path = Path(path)
    real = Path(os.path.realpath(path))
    lock_path = real.with_name(real.name + ".lock")
    key = str(lock_path)
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    if not real.parent.is_dir():
        raise StoreError(f"the folder for the store {path} does not exist: create {path.parent}")
    with contextlib.ExitStack() as held:
        fd = _open_lock_file(lock_path)
        held.callback(os.close, fd)  # closing releases the flock
        _flock_or_busy(fd, path, lambda: os.pread(fd, 64, 0))
        if real.exists():
            store_fd = os.open(real, os.O_RDONLY)
            held.callback(os.close, store_fd)
            _flock_or_busy(store_fd, path, lambda: b"")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD_LOCKS[key] = 1
        try:
            yield
        finally:
            del _HELD_LOCKS[key]


def _open_lock_file(lock_path: Path) -> int:
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        hint = _DISK_FIXES.get(exc.errno)
        raise StoreError(
            f"cannot create the run lock {lock_path}: {exc.strerror}"
            + (f"; {hint[1]}, then run again" if hint else "")
        ) from exc


def _flock_or_busy(fd: int, path: Path, holder: Callable[[], bytes]) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = holder().decode(errors="replace").strip()
        raise StoreBusyError(
            f"another run is writing to {path}"
            + (f" (PID {pid})" if pid else " (under another name of the same file)")
            + "; wait for it to finish or stop it, then run again. Nothing was changed."
        ) from None


# Run locks this process holds (resolved lock path -> nesting depth).
_HELD_LOCKS: dict[str, int] = {}


# errno -> (what happened, what to do), for writes that fail because of the disk.
_DISK_FIXES = {
    errno.ENOSPC: ("the disk is full", "free some space on it"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or raise the quota"),
    errno.EROFS: (
        "the file system is read-only",
        "remount it read-write or give --db a file on a writable disk",
    ),
}
_DISK_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
}


def disk_error(exc: BaseException) -> StoreError | None:
    """A StoreError with a one-line message when `exc` (or what caused it) is a full or read-only
    disk (an OSError, or a DuckDB error quoting one), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = exc.errno if isinstance(exc, OSError) else None
        if code is None and isinstance(exc, duckdb.Error):
            code = next((c for text, c in _DISK_TEXTS.items() if text in str(exc)), None)
        if code in _DISK_FIXES:
            what, fix = _DISK_FIXES[code]
            detail = str(exc).strip().splitlines()[-1][:300]
            return StoreError(
                f"cannot write: {what} ({detail}). Work committed before this is "
                f"kept and the store is intact; {fix}, then run the command again."
            )
        exc = exc.__cause__ or exc.__context__
    return None


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """Run one statement; when it fails, log it with its parameters and re-raise."""
    try:
        return con.execute(sql, params or [])
    except duckdb.Error as exc:
        log_failed(sql, params, exc)
        raise


def ids_table(frame_ids: Iterable[int]) -> "pa.Table":
    """Distinct frame ids as a one-column Arrow table, to register and join against."""
    import numpy as np
    import pyarrow as pa

    ids = np.unique(np.asarray(list(frame_ids), dtype=np.int64))
    return pa.table({"frame_id": pa.array(ids, type=pa.int64())})


def log_failed(sql: str, params: object, exc: Exception) -> None:
    """Log failed SQL with its parameters (the caller re-raises)."""
    log.error("SQL failed: %s\n  params: %r\n  error: %s", sql, params, exc)


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """First row of a query, or None.

    DuckDB 2.x keeps an `execute()` result open until it is fully fetched, and then refuses
    `con.sql(...)` on that connection; so never `fetchone()`: this fetches everything.
    """
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The single value of a one-row, one-column query (None when no row)."""
    row = fetch_one(con, sql, params)
    return None if row is None else row[0]
