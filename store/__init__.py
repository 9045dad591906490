"""The DuckDB store: schema, migrations and all SQL. Imports neither `pipeline` nor `dashboard`.

Everyone opens the file through `connect()`; area modules (`store.frames`, `store.embeddings`,
`store.analysis`, `store.weather`, `store.reviews`, `store.kv`, `store.facts`) hold the writers
and readers for their tables; `store.upkeep` works on the file itself (size, compact).
"""

from store.db import (
    SchemaError,
    StoreBusyError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    connect,
    writer_lock,
)

__all__ = [
    "SchemaError",
    "StoreBusyError",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "connect",
    "writer_lock",
]
