"""Dashboard benchmark: server-side render time per page for stores of 1k, 100k and 750k frames.

    .venv/bin/python bench/dashboard.py [--sizes 1000,100000,750000] [--repeats 15] [--keep DIR]
    .venv/bin/python bench/dashboard.py --sizes 100000,750000 --keep DIR --reuse  # time DIR's
    .venv/bin/python bench/dashboard.py --store FILE [--repeats 15]   # time an existing store
    ... [--filter hours|weather|flagged]   # what the timed filters restrict (see FILTERS)
    ... [--causes quality,camera]   # the consensus of other junk causes (materialised once)
    ... --compare-causes quality,camera   # own causes, those materialised, those in SQL

Stores are synthetic and made with SQL in seconds (frames every 10 minutes, every minute past
a million frames (`spacing_min`: 3,000,000 frames span 5.7 years, not 57), with a day/night
cycle, hourly weather, one complete analysis run with clusters, 2-D map, seven detectors, four
scores per cause of junk (`cause:quality`, ...) and five neighbours per frame, tiny thumbnails, a review of one frame in 500), then the run's
incidents, mosaic and aggregates are written as `analyze` writes them (`write_aggregates`:
the mosaic decodes every thumbnail it uses, which is most of the build time). Each page is
timed the way the server renders it
on an interaction whose filters changed (query cache cold): the store readers the page calls
(each opening a read-only connection, as `dashboard.data` does) plus the Plotly figures it
builds. Each page makes the same reader calls as its view in `dashboard/views/` (one
`Reader.call_many` per page render, i.e. one read-only connection). Prints JSON: per size
and page p50/p95 wall-clock milliseconds, and the CPU time the process used (all threads; a
better guide than wall time when the machine is shared and loaded), plus the store build
time and the load average. The sizes are built first and then timed interleaved (each round
renders every page once on every store), so load on a shared machine falls on every size alike;
with several sizes it prints each page's p95 as a ratio to the first size's. Under "(readers)"
each store reader's wall time per call (p50/p95 over every call of it in the timed renders),
to see which reader grows with the store.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import store  # noqa: E402

DETECTORS_SCORED = ("consensus", "iforest", "lof", "knn", "ecod", "hbos", "dark")
CAUSES_SCORED = ("cause:quality", "cause:camera", "cause:scene", "cause:rarity")
CONDITIONS = ("clear", "cloudy", "rain", "fog", "snow")


def spacing_min(n_frames: int) -> int:
    """Minutes between a synthetic store's frames: 10 (100,000 frames span 1.9 years, 750,000
    14 years), or 1 past a million frames, as a camera shooting every minute (3,000,000 span
    5.7 years; at 10 minutes they would span 57, and the cells would cut them into 684
    months: no camera archive is that long)."""
    return 10 if n_frames <= 1_000_000 else 1


def _thumbs(n: int = 12, size=(64, 36)) -> pd.DataFrame:
    """A few small, different-looking JPEG thumbnails reused across frames."""
    rng = np.random.default_rng(1)
    blobs = []
    for k in range(n):
        sky = np.array([90 + 12 * k, 140 + 5 * k, 200 - 8 * k]) % 255
        grass = np.array([50 + 6 * k, 120 + 4 * k, 40 + 3 * k]) % 255
        h, w = size[1], size[0]
        img = np.zeros((h, w, 3), dtype=np.float32)
        img[: h // 2] = sky
        img[h // 2 :] = grass
        img += rng.normal(0, 10, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=70)
        blobs.append(buf.getvalue())
    return pd.DataFrame({"k": range(n), "jpeg": blobs})


def build_store(
    path: Path,
    n_frames: int,
    root: str = "/srv/camera",
    seed: int = 0,
    start: date = date(2024, 4, 1),
    every_min: int | None = None,
) -> Path:
    """A synthetic but realistic store with `n_frames` frames (SQL only, seconds at 750k), one
    every `every_min` minutes (default `spacing_min(n_frames)`)."""
    path = Path(path)
    every = int(every_min or spacing_min(n_frames))
    with store.connect(path) as con:
        con.execute(f"SELECT setseed({0.1 + seed / 1000})")
        con.execute(
            """
            INSERT INTO frames (frame_id, path, root, location, taken_at, taken_at_utc,
                time_source, utc_offset_min, width, height, file_bytes, file_mtime, mean_luma,
                contrast, sharpness, colorfulness, sun_elevation, daylight, daylight_source)
            WITH t AS (
                SELECT i + 1 AS frame_id,
                       CAST($start AS TIMESTAMP) + INTERVAL 1 MINUTE * ($every * i)
                           AS taken_at
                FROM range($n) r(i))
            , e AS (
                SELECT *, 55 * sin(pi() * (hour(taken_at) + minute(taken_at) / 60.0 - 6) / 12.0)
                          - 8 AS elev
                FROM t)
            SELECT frame_id,
                   strftime(taken_at, '%Y/%m/%d/') || 'frame_' || frame_id || '.jpg',
                   $root,
                   $root || strftime(taken_at, '/%Y/%m/%d/') || 'frame_' || frame_id || '.jpg',
                   taken_at, CAST(taken_at AS TIMESTAMP) AT TIME ZONE 'UTC', 'exif', 0,
                   1920, 1080, 350000 + (frame_id % 50000), taken_at AT TIME ZONE 'UTC',
                   greatest(3, least(250, 120 + 2 * elev + 10 * random())), 40 + 5 * random(),
                   100 + 50 * random(), 20 + 10 * random(), elev,
                   CASE WHEN elev > 0 THEN 'day' WHEN elev > -6 THEN 'twilight' ELSE 'night' END,
                   'sun'
            FROM e""",
            {"start": start, "n": int(n_frames), "root": root, "every": every},
        )
        con.register("thumb_blobs", _thumbs())
        con.execute("""INSERT INTO thumbnails SELECT f.frame_id, b.jpeg, 64, 36
                       FROM frames f JOIN thumb_blobs b ON b.k = f.frame_id % 12""")
        con.unregister("thumb_blobs")
        con.execute("""INSERT INTO models (model, family, weights, dim, input_size)
                       VALUES ('pixels', 'baseline', 'none', 108, 16)""")
        con.execute(
            """
            INSERT INTO analysis_runs (run_id, model, params, status, n_frames, started_at,
                                       finished_at, code_version, timings)
            VALUES (nextval('run_id_seq'), 'pixels', ?, 'complete', ?,
                    now() - INTERVAL 2 MINUTE, now() - INTERVAL 1 MINUTE, 'bench',
                    '{"pca": 0.8, "detectors": 20.5, "clusters": 3.1}')""",
            [
                json.dumps(
                    {
                        "detectors": list(DETECTORS_SCORED),
                        "clusterer": "kmeans",
                        "n_clusters": "auto",
                        "contamination": 0.05,
                    }
                ),
                n_frames,
            ],
        )
        run_id = store.db.scalar(con, "SELECT max(run_id) FROM analysis_runs")
        con.execute(
            """
            INSERT INTO clusters
            SELECT $run, frame_id, cl,
                   cos(cl * 1.3) * 6 + (random() - 0.5) * 4,
                   sin(cl * 1.3) * 6 + (random() - 0.5) * 4
            FROM (SELECT frame_id,
                         CASE WHEN frame_id % 211 = 0 THEN -1
                              WHEN daylight = 'night' THEN 0 WHEN daylight = 'twilight' THEN 1
                              ELSE 2 + CAST(floor(random() * 4) AS INTEGER) END AS cl
                  FROM frames)""",
            {"run": run_id},
        )
        con.register(
            "dets",
            pd.DataFrame(
                {
                    "detector": [*DETECTORS_SCORED, *CAUSES_SCORED],
                    "d": range(len(DETECTORS_SCORED) + len(CAUSES_SCORED)),
                }
            ),
        )
        con.execute(
            """
            INSERT INTO outlier_scores
            WITH raw AS (
                SELECT d.detector, f.frame_id,
                       random() + CASE WHEN f.frame_id % 97 = 0 THEN 1.5 ELSE 0 END
                       + CASE WHEN d.detector = 'dark' THEN (255 - f.mean_luma) / 100 ELSE 0 END
                       AS score
                FROM frames f CROSS JOIN dets d)
            SELECT $run, detector, frame_id, score,
                   percent_rank() OVER (PARTITION BY detector ORDER BY score) AS pct,
                   percent_rank() OVER (PARTITION BY detector ORDER BY score) >= 0.95
            FROM raw ORDER BY detector, frame_id""",
            {"run": run_id},
        )  # as analyze writes them
        con.unregister("dets")
        con.execute(
            """
            INSERT INTO neighbors
            SELECT $run, f.frame_id, k, CASE WHEN f.frame_id + k <= $n THEN f.frame_id + k
                                             ELSE f.frame_id - k END, k * 0.1 + random() * 0.05
            FROM frames f CROSS JOIN range(1, 6) r(k)""",
            {"run": run_id, "n": int(n_frames)},
        )
        con.execute(
            """
            INSERT INTO weather (station, observed_at, temperature_c, precipitation_mm,
                                 cloud_cover_pct, wind_speed_ms, visibility_km, condition, source)
            SELECT 'bench', ts, 8 + 6 * random(), CASE WHEN c = 'rain' THEN 1.2 ELSE 0 END,
                   100 * random(), 5 * random(), CASE WHEN c = 'fog' THEN 0.5 ELSE 20 END,
                   c, 'synthetic'
            FROM (SELECT ts, $conds[1 + CAST(floor(random() * 5) AS INTEGER) % 5] AS c
                  FROM generate_series(CAST($start AS TIMESTAMP) AT TIME ZONE 'UTC',
                       (CAST($start AS TIMESTAMP) + INTERVAL 1 MINUTE * ($every * $n))
                           AT TIME ZONE 'UTC',
                       INTERVAL 1 HOUR) g(ts))""",
            {"start": start, "n": int(n_frames), "conds": list(CONDITIONS), "every": every},
        )
        con.execute("""INSERT INTO reviews (frame_id, verdict, frame_taken_at, frame_daylight)
                       SELECT frame_id, CASE WHEN frame_id % 1000 = 0 THEN 'keep' ELSE 'junk' END,
                              taken_at, daylight
                       FROM frames WHERE frame_id % 500 = 0""")  # an afternoon's reviewing
        con.execute("""INSERT INTO ground_truth
                       SELECT frame_id, frame_id % 97 = 0,
                              CASE WHEN frame_id % 97 = 0 THEN 'person' ELSE 'normal' END
                       FROM frames""")
        con.execute(
            """INSERT INTO ingest_errors (location, path, stage, message, root,
                                                 file_bytes)
                       VALUES ($root || '/2024/04/01/broken.jpg', '2024/04/01/broken.jpg',
                               'ingest', 'truncated JPEG: image file is truncated', $root, 1024),
                              ($root || '/notes.jpg', 'notes.jpg', 'ingest',
                               'not an image (text file)', $root, 12)""",
            {"root": root},
        )
    write_aggregates(path, run_id)
    return path


def write_aggregates(path: Path, run_id: int) -> None:
    """The run's incidents, mosaic and aggregates, written as `analyze` writes them: incidents
    from the consensus flags (`pipeline.incidents`, each detector's plain cause as its
    evidence), the mosaic from the stored thumbnails (`pipeline.mosaic`; no background
    detector ran, so every chosen thumbnail is decoded for it), both through
    `store.aggregates.write`, the writer `analyze` calls, in one transaction."""
    from pipeline.detectors import CONSENSUS, DETECTORS
    from pipeline.incidents import cause_evidence, find_incidents
    from pipeline.mosaic import READ_CHUNK, MosaicBuilder
    from pipeline.pixels import ThumbnailReader
    from store import aggregates

    with store.connect(path) as con:
        frames = con.execute(
            "SELECT frame_id, taken_at, daylight FROM frames ORDER BY frame_id"
        ).df()
        keys = [k for k in DETECTORS_SCORED if k in DETECTORS]
        wide = con.execute(  # the names are this file's constants, the run id an int
            f"PIVOT (SELECT frame_id, detector, score_pct FROM outlier_scores "
            f"WHERE run_id = {int(run_id)}) ON detector IN "
            f"({', '.join(repr(k) for k in keys)}) USING first(score_pct) "
            "ORDER BY frame_id"
        ).df()
        cons = con.execute(
            "SELECT score, score_pct, is_outlier FROM outlier_scores WHERE run_id = ? "
            "AND detector = ? ORDER BY frame_id",
            [run_id, CONSENSUS],
        ).df()
    ids = frames["frame_id"].to_numpy()
    local = frames["taken_at"].to_numpy(dtype="datetime64[ns]")
    wide = wide.set_index("frame_id").reindex(ids)
    pcts = {k: wide[k].to_numpy(dtype=float) for k in keys}
    evidence = cause_evidence(pcts, {k: {DETECTORS[k].plain_cause: 1.0} for k in keys})
    found = find_incidents(
        ids,
        local,
        frames["daylight"].to_numpy(object),
        cons["is_outlier"].to_numpy(bool),
        cons["score"].to_numpy(float),
        cons["score_pct"].to_numpy(float),
        evidence,
        gap=2,
    )
    reader = ThumbnailReader(path, chunk=READ_CHUNK)
    mosaic = MosaicBuilder(ids, local, reader.aspect(ids)).finish(
        reader, found.frames["frame_id"].to_numpy(np.int64)
    )
    with store.connect(path) as con:
        con.execute("BEGIN TRANSACTION")
        aggregates.write(
            con, run_id, incidents=found.table, incident_frames=found.frames, mosaic=mosaic
        )
        con.execute("COMMIT")


def _timed_reader(db: Path):
    """A `dashboard.data.Reader` that also records each reader call's wall time (ms) by reader
    name, in `.times` (the calls a page makes share one connection, as in the dashboard)."""
    from dashboard.data import Reader

    class TimedReader(Reader):
        times: dict[str, list[float]]

        def _one(self, con, shadows, name, args):
            t0 = time.perf_counter()
            out = super()._one(con, shadows, name, args)
            self.times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
            return out

    reader = TimedReader(db, lock_wait_s=5.0)
    reader.times = {}
    return reader


#: What the timed filters restrict besides the hours (`--filter`): nothing more (the default;
#: the aggregates answer), a weather condition (the aggregates answer while their conditions
#: hold), or the detector's flags (a threshold: every page scans the frames).
FILTERS = ("hours", "weather", "flagged")


def _pages(
    db: Path, repeats: int, kind: str = "hours", causes: tuple[str, ...] = ()
) -> tuple[dict, list, Any]:
    """Each page's render as a function of a filter, and `repeats` filters that differ (another
    hour window each) so no query result is reused; the reader, whose `.times` hold each reader
    call's wall times. `causes`: the junk causes the consensus counts (the sidebar's control;
    () = the run's own)."""
    from dashboard import charts
    from store.causes import choose
    from store.facts import FrameFilter

    reader = _timed_reader(db)
    opts = reader.call("options", None)
    run_id = opts["run_id"]
    # Each repeat changes a filter (another hour window) so no query result is reused.
    flts = [
        FrameFilter(run_id=run_id, hour_from=r % 6, hour_to=23 - (r % 5)) for r in range(repeats)
    ]
    if kind == "weather":
        flts = [f.replace(conditions=("rain",)) for f in flts]
    elif kind == "flagged":
        flts = [f.replace(threshold_kind="flagged") for f in flts]
    if causes:
        chosen = choose(causes, opts["causes"], opts["junk_causes"])
        flts = [f.replace(junk_causes=chosen) for f in flts]
    dets = opts["detectors"]

    def overview(flt):
        s, per, cal, line, picture = reader.call_many(
            (
                ("summary", (flt,)),
                ("outliers_per_detector", (flt,)),
                ("calendar", (flt,)),
                ("timeline", (flt,)),
                ("mosaic", (flt.run_id, flt.junk_causes)),
            )
        )
        charts.mosaic(
            picture["png"],
            picture["days"],
            picture["cell_height"],
            picture["outlined"],
            (opts["date_min"], opts["date_max"]),
            (flt.hour_from, flt.hour_to),
        )
        charts.outliers_bar(per)
        charts.calendar_heatmap(cal, "n_frames")
        charts.timeline(line)

    def incidents(flt):
        _, found = reader.call_many(
            (("run_params", (run_id,)), ("incident_list", (flt, 1000, None)))
        )
        table = found["rows"]
        charts.incident_timeline(table, found["n"])
        pick = int(
            table.sort_values(["n_frames", "peak_score"], ascending=False)["incident_id"].iloc[0]
        )
        reader.call("incident_strip", run_id, pick, 12, flt.detector, flt.junk_causes)

    def gallery(flt):
        reader.call("gallery_page", flt, 0, 24, "score")

    def map_page(flt):
        pts, _ = reader.call("map_points", flt, 20_000, False)
        charts.map_scatter(pts, "cluster")

    def clusters(flt):
        sizes, prof, _ = reader.call_many(
            (
                ("cluster_sizes", (flt,)),
                ("cluster_profiles", (flt,)),
                ("cluster_samples", (flt, 6, 0, True)),
            )
        )
        charts.cluster_sizes(sizes)
        charts.cluster_profile(prof, "hour")
        charts.cluster_profile(prof, "day")

    def compare(flt):
        a, b = dets[0], dets[1]
        chosen = dets[:4]
        wide, _ = reader.call_many(
            (
                ("detector_matrix", (flt, chosen, charts.COMPARE_MAX_FRAMES, True)),
                ("top_k_differences", (flt, a, b, 50, 6)),
            )
        )
        known = wide.loc[
            wide["label_source"].notna(), ["frame_id", "label_is_anomaly", "label_source"]
        ].rename(columns={"label_is_anomaly": "is_anomaly", "label_source": "source"})
        charts.rank_scatter(wide, a, b)
        charts.spearman_heatmap(wide, chosen)
        charts.overlap_heatmap(wide, chosen, 50)
        charts.agreement_over_time(wide, chosen)
        charts.precision_at_k(wide, known, chosen, k_max=50)
        charts.roc_curves(wide, known, chosen)

    def frame(flt):
        fid = 1 + flts.index(flt) * 7
        _, _, scores, _, _ = reader.call_many(
            (
                ("frame_detail", (fid, run_id)),
                ("adjacent_frames", (fid,)),
                ("scores_for", (run_id, [fid], flt.junk_causes)),
                ("neighbor_page", (run_id, fid, flt.detector, flt.junk_causes)),
                ("thumbnails", ([fid],)),
            )
        )
        charts.frame_scores(scores)

    def review(flt):
        reader.call_many(
            (
                ("review_counts", ()),
                ("next_unreviewed_row", (flt, ())),
                ("export_count", (flt, "not_junk")),
                ("export_frames", (flt, "not_junk", 200)),
            )
        )

    def runs(flt):
        reader.call_many((("store_counts", ()), ("runs", ()), ("ingest_errors", ())))

    def open_close(_):
        with store.connect(db, read_only=True):
            pass

    pages = {
        "(open + close one read-only connection)": open_close,
        "Overview": overview,
        "Incidents": incidents,
        "Gallery": gallery,
        "Map": map_page,
        "Clusters": clusters,
        "Compare detectors": compare,
        "Frame": frame,
        "Review & export": review,
        "Runs & errors": runs,
    }
    return pages, flts, reader


def _stats(wall: list[float], cpu: list[float]) -> dict[str, float]:
    def p(values, q):
        values = sorted(values)
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {
        "p50_ms": round(statistics.median(wall), 1),
        "p95_ms": p(wall, 0.95),
        "cpu_p50_ms": round(statistics.median(cpu), 1),
        "cpu_p95_ms": p(cpu, 0.95),
    }


def _timed(fn, arg) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn(arg)
    return (time.perf_counter() - w0) * 1000, (time.process_time() - c0) * 1000


def _time_pages(
    db: Path, repeats: int, kind: str = "hours", causes: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    """p50/p95 per page of one store, each page's renders one after another."""
    return _time_interleaved({"store": db}, repeats, kind, causes)["store"]


def _time_interleaved(
    dbs: dict[str, Path],
    repeats: int,
    kind: str = "hours",
    causes: tuple[str, ...] = (),
    in_sql: frozenset = frozenset(),
    causes_of: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, dict[str, dict]]:
    """p50/p95 per store and page, the stores' renders interleaved: round after round, each
    page is rendered once on every store (the stores' order turning each round), so a burst of
    load on the shared machine hits every size alike and the ratios between sizes hold.
    `causes_of`: per key, its own `causes`; keys in `in_sql` recombine them in SQL on every
    reader call (`TIMELAPSE_CONSENSUS_CACHE=0`) instead of reading them materialised once."""
    from store.causes import ENV_CACHE

    def sql_if(key: str):
        os.environ[ENV_CACHE] = "0" if key in in_sql else "1"

    causes_of = causes_of or {}
    setup = {}
    for key, db in dbs.items():
        sql_if(key)
        setup[key] = _pages(db, repeats, kind, causes_of.get(key, causes))
    names = list(next(iter(setup.values()))[0])
    for key, (pages, flts, reader) in setup.items():
        sql_if(key)
        for fn in pages.values():
            fn(flts[0])  # warm the OS file cache and imports (and materialise the consensus)
        reader.times.clear()
    times = {key: {name: [] for name in names} for key in dbs}
    keys = list(dbs)
    for r in range(repeats):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for name in names:
            for key in order:
                pages, flts, _ = setup[key]
                sql_if(key)
                times[key][name].append(_timed(pages[name], flts[r]))
    os.environ.pop(ENV_CACHE, None)
    out = {
        key: {
            name: _stats([w for w, _ in runs], [c for _, c in runs]) for name, runs in per.items()
        }
        for key, per in times.items()
    }
    for key, (_, _, reader) in setup.items():  # each reader call's wall time, by reader
        out[key]["(readers)"] = {
            name: {"p50_ms": round(statistics.median(ms), 1), "p95_ms": _stats(ms, ms)["p95_ms"]}
            for name, ms in sorted(reader.times.items())
        }
    return out


def _compare_causes(args) -> None:
    """`--compare-causes`: per store size, the run's own causes against other causes read
    materialised and recombined in SQL, interleaved in one run; the build of the materialised
    consensus timed apart (the first page with those causes pays it once per store stamp)."""
    from store import causes as rc
    from store import facts

    chosen = tuple(c.strip() for c in args.compare_causes.split(",") if c.strip())
    folder = args.keep or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "repeats": args.repeats,
        "filter": args.filter,
        "causes": list(chosen),
        "load_average_before": os.getloadavg()[0],
        "sizes": {},
    }
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        db = folder / f"bench-{n}.duckdb"
        if not (args.reuse and db.exists()):
            db.unlink(missing_ok=True)
            build_store(db, n)
        with store.connect(db, read_only=True) as con:
            run_id = facts.latest_run_id(con)
            opts = facts.options(con, run_id)
        picked = rc.choose(chosen, opts["causes"], opts["junk_causes"])
        with store.connect(db, read_only=True) as con:  # a page's connection builds it
            w0, c0 = time.perf_counter(), time.process_time()
            rc.materialise(con, run_id, picked)
            build = {
                "wall_ms": round((time.perf_counter() - w0) * 1000),
                "cpu_ms": round((time.process_time() - c0) * 1000),
            }
        timed = _time_interleaved(
            {"own": db, "materialised": db, "sql": db},
            args.repeats,
            args.filter,
            in_sql=frozenset({"sql"}),
            causes_of={"own": (), "materialised": picked, "sql": picked},
        )
        ratios = {
            key: {
                name: {
                    "p50": round(p["p50_ms"] / timed["own"][name]["p50_ms"], 2),
                    "cpu_p50": round(
                        p["cpu_p50_ms"] / max(0.1, timed["own"][name]["cpu_p50_ms"]), 2
                    ),
                }
                for name, p in timed[key].items()
                if name != "(readers)"
            }
            for key in ("materialised", "sql")
        }
        out["sizes"][str(n)] = {"materialise": build, "pages": timed, "ratio_to_own": ratios}
        print(
            json.dumps({"size": n, "materialise": build, "ratio_to_own": ratios}), file=sys.stderr
        )
    out["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,100000,750000", help="comma-separated store sizes in frames"
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed renders per page")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the generated stores in this folder"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: time the stores already in that folder instead of "
        "building them again (they must come from this code)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="time this existing store instead of building synthetic ones",
    )
    parser.add_argument(
        "--filter",
        choices=FILTERS,
        default="hours",
        help="what the timed filters restrict besides the hours: nothing more, a weather "
        "condition (rain), or the detector's flags (a threshold: the pages scan)",
    )
    parser.add_argument(
        "--causes",
        default="",
        metavar="CAUSE,...",
        help="the junk causes the consensus counts (the sidebar's control): another choice "
        "than the run's own recombines it in SQL, and the pages scan [default: the run's own]",
    )
    parser.add_argument(
        "--compare-causes",
        default="",
        metavar="CAUSE,...",
        help="time each store three ways, interleaved: the run's own causes, these causes "
        "materialised once (as the dashboard reads them) and these causes recombined in SQL "
        "on every reader call; prints the ratios to the run's own",
    )
    args = parser.parse_args()
    causes = tuple(c.strip() for c in args.causes.split(",") if c.strip())
    if args.compare_causes:
        _compare_causes(args)
        return
    if args.store is not None:
        pages = _time_pages(args.store, args.repeats, args.filter, causes)
        print(
            json.dumps(
                {
                    "store": str(args.store),
                    "repeats": args.repeats,
                    "filter": args.filter,
                    "causes": list(causes),
                    "load_average": os.getloadavg()[0],
                    "pages": pages,
                },
                indent=2,
            )
        )
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = {
        "repeats": args.repeats,
        "filter": args.filter,
        "causes": list(causes),
        "load_average_before": os.getloadavg()[0],
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        dbs = {}
        for n in sizes:
            db = folder / f"bench-{n}.duckdb"
            if not (args.reuse and db.exists()):
                db.unlink(missing_ok=True)
                t0 = time.perf_counter()
                build_store(db, n)
                results["sizes"][str(n)] = {"build_s": round(time.perf_counter() - t0, 1)}
            else:
                results["sizes"][str(n)] = {"build_s": None}
            results["sizes"][str(n)]["file_mb"] = round(db.stat().st_size / 1e6, 1)
            print(json.dumps({"size": n, **results["sizes"][str(n)]}), file=sys.stderr)
            dbs[str(n)] = db
        results["load_average_timing"] = os.getloadavg()[0]
        timed = _time_interleaved(dbs, args.repeats, args.filter, causes)
        for n, pages in timed.items():
            results["sizes"][n]["pages"] = pages
            results["sizes"][n]["max_page_p95_ms"] = max(
                p["p95_ms"] for k, p in pages.items() if not k.startswith("(")
            )
        if len(sizes) > 1:
            base = str(sizes[0])
            results["p95_ratio_to_" + base] = {
                n: {
                    name: round(p["p95_ms"] / timed[base][name]["p95_ms"], 2)
                    for name, p in pages.items()
                    if name != "(readers)"
                }
                for n, pages in timed.items()
                if n != base
            }
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
