"""The store's own settings (`settings` table): key -> JSON value, e.g. the camera's timezone.

Settings that describe the data (place, timezone, clock offset, weather station and tolerance)
live in the store so every later command and the dashboard agree on them.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from store.db import fetch_one


def get(con: duckdb.DuckDBPyConnection, key: str, default: Any = None) -> Any:
    row = fetch_one(con, "SELECT value FROM settings WHERE key = ?", [key])
    return default if row is None else json.loads(row[0])


def get_all(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    rows = con.execute("SELECT key, value FROM settings ORDER BY key").fetchall()
    return {key: json.loads(value) for key, value in rows}


def put(con: duckdb.DuckDBPyConnection, key: str, value: Any) -> None:
    """Set one key (None deletes it)."""
    if value is None:
        con.execute("DELETE FROM settings WHERE key = ?", [key])
        return
    con.execute(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, now()) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, json.dumps(value)],
    )
