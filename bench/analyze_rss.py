"""Where `analyze`'s memory goes: RSS over time, by step, and DuckDB's own memory during the write.

    .venv/bin/python bench/analyze_rss.py --db STORE [--trace FILE] [--model synthetic]

Runs `pipeline.analyze.analyze` (default settings) once on an existing store, e.g. one that
`bench/analyze.py --keep` left, in this process, while a thread samples this process's RSS
(/proc/self/status) every 0.25 s, labelled with the step running then (the steps of
`AnalyzeResult.timings`, and within `write` which part is being inserted); while the write's
connection is open it also reads DuckDB's `duckdb_memory()` (bytes per tag: ART_INDEX,
BASE_TABLE, OVERFLOW_STRINGS, ...) through a cursor of its own, made as the write connects.
Prints JSON: wall and CPU seconds (all threads), the peak RSS (ru_maxrss: a fresh process that
only analyses, as `analyze_peak_rss_mib` of bench/analyze.py), the highest RSS seen in each
step, and DuckDB's highest memory per tag. A sample comes late while a step holds the GIL (a
KD-tree query): the peak RSS is exact, the per-step peaks are what the samples saw.
`--trace FILE` keeps every sample as JSON lines: [seconds, step, RSS MiB, DuckDB MiB by tag].
The labels come from wrapping the analysis' step timer and the store's insert functions in
this process; nothing else changes, so the run is the one `python -m pipeline analyze` makes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_S = 0.25


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="the store to analyse")
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--trace", type=Path, default=None, help="JSON lines of every sample")
    args = parser.parse_args()

    import pipeline.analyze as pa
    import store
    from pipeline.settings import Settings
    from store import aggregates
    from store import analysis as sa

    step = ["(between steps)"]
    samples: list[tuple] = []
    duck_peak: dict[str, int] = {}
    write_cons: list = []
    done = threading.Event()

    @contextlib.contextmanager
    def labelled(name: str):
        before = step[0]
        step[0] = name
        try:
            yield
        finally:
            step[0] = before

    def sample() -> None:
        started = time.monotonic()
        while not done.is_set():
            duck = None
            if write_cons and not step[0].startswith("write"):  # the write is over
                write_cons.pop().close()
            if write_cons:
                try:
                    rows = (
                        write_cons[-1]
                        .sql(
                            "SELECT tag, memory_usage_bytes FROM duckdb_memory() "
                            "WHERE memory_usage_bytes > 0"
                        )
                        .fetchall()
                    )
                    duck = {tag: round(b / 2**20) for tag, b in rows}
                    for tag, mib in duck.items():
                        duck_peak[tag] = max(duck_peak.get(tag, 0), mib)
                except Exception:  # the database closed between two samples
                    write_cons.pop().close()
            samples.append((round(time.monotonic() - started, 2), step[0], round(_rss_mib()), duck))
            time.sleep(SAMPLE_S)

    timed = pa._Steps.timed

    @contextlib.contextmanager
    def timed_labelled(self, name):
        with labelled(name), timed(self, name):
            yield

    pa._Steps.timed = timed_labelled

    def wrap(module, name: str) -> None:
        func = getattr(module, name)

        def labelled_call(*a, **k):
            with labelled(f"write:{name}"):
                return func(*a, **k)

        setattr(module, name, labelled_call)

    for name in ("insert_fitted", "insert_clusters", "insert_scores", "insert_neighbors"):
        wrap(sa, name)
    wrap(aggregates, "write")
    connect = store.connect

    def connect_seen(*a, **k):
        con = connect(*a, **k)
        if step[0] == "write":
            # the sampler's own connection to the same database, made here: a DuckDB
            # connection refuses a call while another thread uses it, so the sampler never
            # touches the write's connection itself (doing so failed a run)
            write_cons.append(con.cursor())
        return con

    store.connect = connect_seen
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started, cpu = time.perf_counter(), time.process_time()
    result = pa.analyze(args.db, Settings(model=args.model), progress=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    done.set()
    thread.join()
    by_step: dict[str, int] = {}
    for _, name, rss, _ in samples:
        by_step[name] = max(by_step.get(name, 0), rss)
    if args.trace:
        args.trace.write_text("".join(json.dumps(s) + "\n" for s in samples))
    print(
        json.dumps(
            {
                "db": str(args.db),
                "run_id": result.run_id,
                "frames": result.n_frames,
                "analyze_s": round(wall, 1),
                "analyze_cpu_s": round(cpu, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "peak_rss_mib_by_step": by_step,
                "duckdb_peak_mib_by_tag": duck_peak,
                "steps_s": result.timings,
                "steps_cpu_s": result.cpu,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
