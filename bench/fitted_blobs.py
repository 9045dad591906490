"""What storing one more fitted state costs a store that already holds some; prints JSON.

    .venv/bin/python bench/fitted_blobs.py [--mib 400] [--runs 4] [--out DIR]

A fitted state is one large BLOB (`store.analysis.insert_fitted`: 1.6-2.0 GB for 750k frames of
the default model). Each run of this script's loop stores one more state of `--mib` random bytes
in a fresh process, commits and checkpoints, as `analyze`'s write does, and reports that
process's peak RSS, the seconds and the file's size, for two layouts:

- `one_table`: every state a row of one table (`fitted_runs` until 2026-12-06);
- `table_each`: every state in a table of its own (`store.analysis.fitted_table`, since).

Measured on 2026-12-06 (docs/experiments/2026-12-06-kat-kam-what-is-left.md, section 8): with
one table each commit rewrites the earlier states too, so the peak and the file grow with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def store_one(db: Path, layout: str, run_id: int, mib: int) -> dict:
    """In this process: store one state of `mib` MiB; its peak RSS, seconds and file size."""
    import duckdb
    import pyarrow as pa

    artifact = os.urandom(mib << 20)
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN TRANSACTION")
        if layout == "one_table":
            con.execute(
                "CREATE TABLE IF NOT EXISTS fitted (run_id BIGINT PRIMARY KEY, artifact BLOB)"
            )
            target, columns = "fitted", "run_id, artifact"
            rows = {"run_id": [run_id], "artifact": pa.array([artifact], pa.large_binary())}
        else:
            target, columns = f"fitted_{run_id}", "artifact"
            con.execute(f"CREATE TABLE {target} (artifact BLOB)")
            rows = {"artifact": pa.array([artifact], pa.large_binary())}
        con.register("_new", pa.table(rows))
        cast = columns.replace("artifact", "artifact::BLOB")
        con.execute(f"INSERT INTO {target} ({columns}) SELECT {cast} FROM _new")
        con.unregister("_new")
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return {
        "run": run_id,
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10,
        "file_mib": db.stat().st_size >> 20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=400, help="size of each fitted state")
    parser.add_argument("--runs", type=int, default=4, help="states stored one after another")
    parser.add_argument("--out", type=Path, default=None, help="folder for the stores")
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        db, layout, run_id = args.one
        print(json.dumps(store_one(Path(db), layout, int(run_id), args.mib)))
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-fitted-"))
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"mib": args.mib, "layouts": {}}
    for layout in ("one_table", "table_each"):
        db = out / f"{layout}.duckdb"
        for stale in (db, db.with_name(db.name + ".wal")):
            stale.unlink(missing_ok=True)
        runs = []
        for run_id in range(1, args.runs + 1):
            cmd = [sys.executable, __file__, "--mib", str(args.mib), "--one", str(db), layout]
            done = subprocess.run([*cmd, str(run_id)], check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout))
        result["layouts"][layout] = runs
        db.unlink()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
