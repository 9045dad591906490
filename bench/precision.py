"""float32 against bfloat16 vectors on the demo renders: the vectors, and the junk each finds;
prints JSON.

    .venv/bin/python bench/precision.py --out DIR [--variants demo,hard-june]
                                        [--model vgg16-hed-grid] [--frames 1200]

For each variant (the renders of `bench/quality.py`) it renders the demo into DIR/VARIANT
(skipped when there), ingests it once, embeds every frame at float32 and at bfloat16 into two
copies of the store, and builds two mixed stores from those vectors: `mixed-halves` (the first
half of the frames in time float32, the rest bfloat16: an upgrade mid-archive) and
`mixed-alternate` (alternate batches of 32: two machines embedding side by side). Every store is
analysed with the default settings and evaluated against the demo's ground truth.

Reported per variant:
- `vectors`: bfloat16 against float32, same frames: cosine (min, 1st percentile, median) and
  relative L2 error |b - a| / |a| (median, 99th percentile, max); beside it the relative
  distance from each frame to its nearest *other* frame at float32 (min, 1st percentile,
  median), the difference the analysis works with;
- `stores`: per store, the consensus daylight ROC-AUC, its worst kind, the best single
  detector, and against the float32 store: Spearman correlation of the consensus scores and
  the overlap of the consensus' flagged frames and of its top 50.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import VARIANTS, detector_table, target_summary  # noqa: E402

import store  # noqa: E402
from store import embeddings as se  # noqa: E402
from store.db import ids_table  # noqa: E402

BATCH = 32
TOP_K = 50


def build_stores(folder: Path, work: Path, model: str, settings) -> dict:
    """Ingest once; embed at float32 and bfloat16; the two mixed stores. Returns paths, times."""
    from pipeline.embed import embed_frames
    from pipeline.ingest import ingest_folder
    from pipeline.runner import import_ground_truth

    frames = folder / "frames"
    base = work / "ingested.duckdb"
    if not base.exists():
        ingest_folder(frames, base, settings, progress=False)
        import_ground_truth(base, folder / "ground_truth.csv", frames)
    paths, seconds = {}, {}
    for precision in ("float32", "bfloat16"):
        db = paths[precision] = work / f"{precision}.duckdb"
        if not db.exists():
            partial = work / f"{precision}.partial.duckdb"
            shutil.copy(base, partial)
            started = time.perf_counter()
            embed_frames(
                partial, settings.replace(model=model, precision=precision), progress=False
            )
            seconds[precision] = round(time.perf_counter() - started, 1)
            partial.rename(db)
    with store.connect(paths["float32"], read_only=True) as con:
        ids, a = se.load_vectors(con, model)
        order = con.sql("SELECT frame_id FROM frames ORDER BY taken_at_utc, frame_id").fetchnumpy()[
            "frame_id"
        ]
    with store.connect(paths["bfloat16"], read_only=True) as con:
        ids_b, b = se.load_vectors(con, model)
    assert np.array_equal(ids, ids_b)
    in_time = order[np.isin(order, ids)]
    halves = set(in_time[len(in_time) // 2 :].tolist())
    alternate = {int(f) for i, f in enumerate(in_time) if (i // BATCH) % 2 == 1}
    for name, as_bf16 in (("mixed-halves", halves), ("mixed-alternate", alternate)):
        db = paths[name] = work / f"{name}.duckdb"
        if db.exists():
            continue
        shutil.copy(paths["float32"], db)
        pick = np.isin(ids, np.array(sorted(as_bf16), dtype=np.int64))
        with store.connect(db) as con:
            con.register("_swap", ids_table(ids[pick]))
            con.execute(
                "DELETE FROM embeddings WHERE model = ? AND frame_id IN "
                "(SELECT frame_id FROM _swap)",
                [model],
            )
            con.unregister("_swap")
            se.insert_vectors(con, model, ids[pick], b[pick], precision="bfloat16")
    return {"paths": paths, "embed_s": seconds, "vectors": (ids, a, b)}


def vector_figures(a: np.ndarray, b: np.ndarray) -> dict:
    """bfloat16 (b) against float32 (a), and float32's nearest-other-frame distances."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(axis=1) / (na * nb)
    rel = np.linalg.norm(a - b, axis=1) / na
    nearest = np.empty(len(a))
    for start in range(0, len(a), 256):  # rows in chunks: 1,200 x 4,608 fits, 750k would not
        chunk = a[start : start + 256]
        d2 = np.square(chunk).sum(1)[:, None] + np.square(a).sum(1)[None, :] - 2.0 * chunk @ a.T
        d2[np.arange(len(chunk)), start + np.arange(len(chunk))] = np.inf
        nearest[start : start + len(chunk)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    nearest /= na
    return {
        "n": int(len(a)),
        "cosine": {
            "min": float(cosine.min()),
            "p1": float(np.percentile(cosine, 1)),
            "median": float(np.median(cosine)),
        },
        "relative_error": {
            "median": _r4(np.median(rel)),
            "p99": _r4(np.percentile(rel, 99)),
            "max": _r4(rel.max()),
        },
        "nearest_other_frame": {
            "min": _r4(nearest.min()),
            "p1": _r4(np.percentile(nearest, 1)),
            "median": _r4(np.median(nearest)),
        },
        "nearest_over_error_median": round(float(np.median(nearest / np.maximum(rel, 1e-12))), 1),
        "frames_error_above_nearest_tenth": int((rel > nearest / 10).sum()),
    }


def scores(db: Path, detector: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The latest run's scores of one detector: frame ids, scores, flags (by frame_id)."""
    with store.connect(db, read_only=True) as con:
        rows = con.execute(
            """
            SELECT frame_id, score, is_outlier FROM outlier_scores
            WHERE detector = ? AND run_id = (SELECT max(run_id) FROM analysis_runs
                                             WHERE status = 'complete')
            ORDER BY frame_id""",
            [detector],
        ).fetchnumpy()
    return (
        np.asarray(rows["frame_id"]),
        np.asarray(rows["score"], float),
        np.asarray(rows["is_outlier"], bool),
    )


def compare(reference: Path, other: Path) -> dict:
    """The consensus (Spearman, top-50 and flagged overlap) and, per detector, the Spearman
    correlation of its scores: the detectors on the vectors (lof, knn, iforest...) are where a
    difference in the vectors would show; the image checks do not read them."""
    from scipy.stats import spearmanr

    with store.connect(reference, read_only=True) as con:
        detectors = [
            d
            for (d,) in con.sql(
                "SELECT DISTINCT detector FROM outlier_scores ORDER BY 1"
            ).fetchall()
        ]
    per_detector = {}
    for detector in detectors:
        ids_a, sa, _ = scores(reference, detector)
        ids_b, sb, _ = scores(other, detector)
        assert np.array_equal(ids_a, ids_b)
        ok = np.isfinite(sa) & np.isfinite(sb)
        per_detector[detector] = round(float(spearmanr(sa[ok], sb[ok]).statistic), 5)
    ids_a, sa, fa = scores(reference, "consensus")
    ids_b, sb, fb = scores(other, "consensus")
    top_a = set(ids_a[np.argsort(-sa, kind="stable")[:TOP_K]])
    top_b = set(ids_b[np.argsort(-sb, kind="stable")[:TOP_K]])
    flagged_a, flagged_b = set(ids_a[fa]), set(ids_b[fb])
    return {
        "spearman": per_detector["consensus"],
        f"top{TOP_K}_overlap": len(top_a & top_b) / TOP_K,
        "flagged_jaccard": round(len(flagged_a & flagged_b) / len(flagged_a | flagged_b), 3),
        "spearman_per_detector": per_detector,
    }


def _r4(value) -> float:
    return round(float(value), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="demo,hard-june")
    parser.add_argument("--model", default="vgg16-hed-grid")
    parser.add_argument("--frames", type=int, default=1200)
    args = parser.parse_args()

    from pipeline.analyze import analyze
    from pipeline.demo import render_demo
    from pipeline.settings import Settings

    settings = Settings()
    report: dict = {"model": args.model, "frames": args.frames, "variants": {}}
    for name in args.variants.split(","):
        folder = args.out / name
        if not (folder / "ground_truth.csv").exists():
            render_demo(folder, progress=False, n_frames=args.frames, **VARIANTS[name])
        work = folder / f"precision-{args.model}"
        work.mkdir(exist_ok=True)
        built = build_stores(folder, work, args.model, settings)
        ids, a, b = built["vectors"]
        stores = {}
        for kind, db in built["paths"].items():
            with store.connect(db, read_only=True) as con:
                analysed = con.sql(
                    "SELECT count(*) FROM analysis_runs WHERE status = 'complete'"
                ).fetchall()[0][0]
            if not analysed:
                analyze(db, settings.replace(model=args.model), progress=False)
            stores[kind] = dict(target_summary(detector_table(db, None))[args.model])
            with store.connect(db, read_only=True) as con:
                stores[kind]["precisions"] = se.precision_counts(con, args.model)
            if kind != "float32":
                stores[kind]["against_float32"] = compare(built["paths"]["float32"], db)
        report["variants"][name] = {
            "embed_s": built["embed_s"],
            "vectors": vector_figures(a, b),
            "stores": stores,
        }
        print(f"{name}: done", file=sys.stderr)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
