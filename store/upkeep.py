"""Upkeep of the store file itself: its size on disk, `checkpoint`, which writes the write-ahead
log into the file, and `compact`, which rewrites it into a fresh file so that the space freed by
deletes (`store.analysis.prune_runs`) goes back to the disk.

DuckDB reuses the blocks a DELETE frees for later writes, but it never makes the file smaller.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from store.db import StoreError, connect, execute, scalar

_COPY = "_compact_copy"  # name the fresh file is attached under while it is written


@dataclass
class CompactResult:
    """File size (bytes, write-ahead log included) before and after `compact`."""

    bytes_before: int
    bytes_after: int


def file_size(path: str | os.PathLike) -> int:
    """Bytes the store takes on disk: the file plus its write-ahead log, if there is one."""
    path = Path(path)
    return sum(p.stat().st_size for p in (path, _wal(path)) if p.exists())


def checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Write the write-ahead log into the store file, so the file alone holds every change
    (before the file is copied, e.g. `migrate`'s backup). Needs a write connection."""
    execute(con, "CHECKPOINT")


def compact(path: str | os.PathLike) -> CompactResult:
    """Rewrite the store into a fresh file and put that in place of the old one.

    Every table, view and sequence is copied (`COPY FROM DATABASE`) into `<file>.compact` next
    to the store. The copy is checked before it replaces the file (same tables with the same row
    counts, same views, every sequence continuing at the same value); then `os.replace` swaps it
    in atomically. On any failure the store is left as it was and the partial copy is removed.
    The caller holds `store.writer_lock`; the disk needs room for the copy.
    """
    path = Path(os.path.realpath(path))  # a symlinked store: rewrite the file it points to
    tmp = path.with_name(path.name + ".compact")
    before = file_size(path)
    _remove(tmp)
    try:
        with connect(path) as con:
            checkpoint(con)
            name = scalar(con, "SELECT current_database()")  # the file's stem
            if name == _COPY:
                raise StoreError(
                    f"cannot compact {path}: rename the file first (its name is "
                    "the one compact uses for the copy)"
                )
            con.execute(f"ATTACH {_literal(tmp)} AS {_COPY}")
            try:
                con.execute(f"COPY FROM DATABASE {_ident(name)} TO {_COPY}")
                con.execute(f"CHECKPOINT {_COPY}")
                _check_copy(con, name, path)
            finally:
                con.execute(f"DETACH {_COPY}")
            for leftover in (_wal(path), _wal(tmp)):
                if leftover.exists():  # a log of the old file would be replayed into the new one
                    raise StoreError(
                        f"cannot compact {path}: {leftover} was left after a "
                        "checkpoint; the store is unchanged: run the command again"
                    )
            shutil.copymode(path, tmp)
            # Swapped while this connection still holds DuckDB's lock on the old file, so no
            # other process (a dashboard saving a review) can write to it after the copy.
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return CompactResult(bytes_before=before, bytes_after=file_size(path))


def _check_copy(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    """Raise StoreError unless the attached copy holds what database `name` holds."""
    problems = []
    tables = {
        db: sorted(
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [db]
            ).fetchall()
        )
        for db in (name, _COPY)
    }
    if tables[name] != tables[_COPY]:
        problems.append(f"tables {tables[name]} -> {tables[_COPY]}")
    for table in sorted(set(tables[name]) & set(tables[_COPY])):
        counts = [
            scalar(con, f"SELECT count(*) FROM {_ident(db)}.main.{_ident(table)}")
            for db in (name, _COPY)
        ]
        if counts[0] != counts[1]:
            problems.append(f"{table} has {counts[0]} rows, the copy {counts[1]}")
    views = [
        sorted(
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE database_name = ? AND NOT internal",
                [db],
            ).fetchall()
        )
        for db in (name, _COPY)
    ]
    if views[0] != views[1]:
        problems.append(f"views {views[0]} -> {views[1]}")
    sequences = [
        dict(
            con.execute(
                "SELECT sequence_name, CASE WHEN last_value IS NULL THEN start_value "
                "ELSE last_value + increment_by END FROM duckdb_sequences() WHERE database_name = ?",
                [db],
            ).fetchall()
        )
        for db in (name, _COPY)
    ]
    if sequences[0] != sequences[1]:
        problems.append(f"next sequence values {sequences[0]} -> {sequences[1]}")
    if problems:
        raise StoreError(
            f"cannot compact {path}: the copy differs ({'; '.join(problems)}); "
            "the store is unchanged"
        )


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _remove(path: Path) -> None:
    """Delete a file and its write-ahead log, if they exist."""
    for p in (path, _wal(path)):
        p.unlink(missing_ok=True)


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
