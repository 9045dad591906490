"""`learned` (the consensus re-weighed by the user's reviews), simulated on labels; prints JSON.

    .venv/bin/python bench/learned.py STORE --labels LABELS.csv [--sample SAMPLE.txt]
        [--causes quality,camera] [--reviews 20,40,80,160] [--seeds 5]
        [--order random|top|mixed|balanced|doubt] [--round 20] [--hold-half] [--complete]
        [--min-reviews 5] [--model vgg16-hed-grid]
    .venv/bin/python bench/learned.py STORE --truth   # a render's stored ground truth
    .venv/bin/python bench/learned.py --scale 750000,3000000   # its cost at archive sizes

`--scale N,...`: what fitting `learned` costs `analyze` on N frames (seconds and peak memory
of `Learned.fit` with 25 detectors' ranks, a 64-dimensional PCA space and 200 reviews, random
values; no store; `inputs_mb` is what the model's inputs for every frame would take at once).

STORE is a store `bench/realcam.py` analysed (its latest complete run of `--model`), or with
`--truth` one `bench/quality.py` made (its ground truth; every daylight frame is the sample). A
simulated user reviews K labelled daylight frames (`debatable` left out) and marks each junk or
keep as labelled: `random` reviews K frames drawn at random (a seed each), `top` the K highest
by the consensus (what the dashboard's "One by one" review shows first; seeds do not apply),
`mixed` the highest and one drawn at random in turn ("One by one" to teach `learned`), and
`balanced` the highest while fewer are junk than keep, else one drawn at random, and `doubt`
"One by one" where `learned` is least sure: `mixed` until `learned` can be fitted, then, a
round of `--round` reviews at a time (a user who runs `analyze` after each), the unreviewed
frames whose `learned` rank is nearest the rank where the reviewed junk and keep meet
(`store.facts.meeting_rank`), `learned` fitted again after each round.
`--hold-half`: every other sample frame in time order is never reviewed and is the test set of
every order (so orders compare on the same frames); the user reviews the other sample frames,
or with `--complete` (labels that name every junk frame, as ranhados's do) any daylight frame,
a frame without a label counting as normal, so `top` is the archive's own top.
For each, `learned` is fitted as `analyze` fits it (`pipeline.analyze.learn_from_reviews`'s
`Learned`, on the run's stored percentile ranks, which are the ranks `analyze` fits it on) and
the consensus and `learned` are measured over the sample frames the user did not review
(daylight ROC-AUC / AP). `--causes`: the consensus of those causes (the run's stored cause
scores summed, ranked among the run's frames), as a run analysed with `--junk-causes` has it;
default the run's own. Fewer than `--min-reviews` reviews of a verdict: not fitted, as in
`analyze` (the row says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # realcam (after ROOT: bench/ has a dashboard.py)


def load(store_path: Path, model: str, labels: Path | None, sample: Path | None, causes):
    """(the run's detectors' percentile ranks {key: array}, the consensus's ranks, the frames
    in the run's PCA space (its fitted state's projection of their stored vectors, as
    `analyze` projects them), a table of the run's frames in the same order with `day`,
    `labelled`, `junk` and `in_sample`)."""
    import pandas as pd
    import realcam

    import store
    from pipeline.detectors import CONSENSUS, CauseScore
    from pipeline.score_new import load_fitted_run
    from store import analysis as sa
    from store import embeddings as se

    if not store_path.exists():
        sys.exit(f"{store_path} does not exist")
    with store.connect(store_path, read_only=True) as con:
        runs = sa.latest_complete_runs(con)
        if model not in runs:
            sys.exit(f"no complete {model} run in {store_path} (--model)")
        run_id = runs[model]
        params = sa.get_run(con, run_id)["params"]
        long = sa.run_scores(con, run_id)
        truth = sa.load_ground_truth(con) if labels is None else None
        daylight = sa.frame_daylight(con, long["frame_id"].unique())
        ids, vectors = se.load_vectors(con, model, np.sort(long["frame_id"].unique()))
    if truth is not None and truth.empty:
        sys.exit(f"{store_path} has no ground truth (--truth)")
    pct = long.pivot(index="frame_id", columns="detector", values="score_pct").sort_index()
    wide = long.pivot(index="frame_id", columns="detector", values="score").sort_index()
    if truth is None:
        _, table, _ = realcam.load_scored(
            store_path, model, realcam.read_labels(labels), realcam.read_sample(sample)
        )
        table = table.set_index("frame_id").reindex(pct.index)
        table["labelled"] = table["label"].isin(["junk", "normal"])
        table["junk"] = table["label"] == "junk"
    else:
        table = daylight.set_index("frame_id").reindex(pct.index)
        truth = truth.set_index("frame_id").reindex(pct.index)
        table["labelled"] = truth["is_anomaly"].notna()
        table["junk"] = truth["is_anomaly"].fillna(False).astype(bool)
        table["in_sample"] = table["labelled"]
    table["day"] = table["daylight"] == "day"
    keys = [k for k in params["detectors"] if k in pct]
    pcts = {k: pct[k].to_numpy(float) for k in keys}
    if causes:  # summed as `bench/realcam.py --causes` sums them, ranked among the run's frames
        summed = wide[realcam.add_consensus_of(wide, causes)].to_numpy(float)
        consensus = CauseScore().fit(summed).percentile(summed)
    else:
        consensus = pct[CONSENSUS].to_numpy(float)
    if not np.array_equal(ids, pct.index.to_numpy()):
        sys.exit(f"run {run_id} scored frames that have no {model} vector now (embedded again?)")
    fitted, _ = load_fitted_run(store_path, run_id, read_only=True)
    view = fitted.transform(vectors)
    return pcts, consensus, view, pd.DataFrame(table).reset_index()


def measure(junk: np.ndarray, scores: np.ndarray) -> list[float] | None:
    """[ROC-AUC, AP] of `scores` (higher = junk); None without both junk and keep."""
    from pipeline.evaluate import metrics

    if junk.all() or not junk.any():
        return None
    got = metrics(junk, scores)
    return [round(got["roc_auc"], 3), round(got["average_precision"], 3)]


def scale(sizes: list[int], detectors: int = 25, dims: int = 64, reviews: int = 200) -> dict:
    """Seconds and peak traced memory (MB) of fitting `learned` on n frames' random ranks and
    places in a PCA space of `dims` dimensions."""
    import time
    import tracemalloc

    from pipeline.detectors.learned import Learned

    out = {}
    for n in sizes:
        rng = np.random.default_rng(0)
        pcts = {f"d{j}": rng.random(n).astype(np.float32) for j in range(detectors)}
        consensus = rng.random(n)
        view = rng.normal(size=(n, dims)).astype(np.float32)
        reviewed = np.sort(rng.choice(n, reviews, replace=False))
        junk = pcts["d0"][reviewed] + 0.3 * rng.random(reviews) > 0.8
        tracemalloc.start()
        started = time.perf_counter()
        Learned(list(pcts)).fit(pcts, consensus, reviewed, junk, view)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        out[str(n)] = {
            "seconds": round(seconds, 2),
            "peak_mb": round(peak, 1),
            "inputs_mb": round((detectors + dims) * n * 4 / 2**20, 1),
        }
    return {"detectors": detectors, "view_dims": dims, "reviews": reviews, "frames": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    if "--scale" in sys.argv:
        at = sys.argv.index("--scale")
        try:
            sizes = [int(x) for x in sys.argv[at + 1].split(",")]
        except (IndexError, ValueError):
            sys.exit("--scale takes frame counts, N,N")
        json.dump(scale(sizes), sys.stdout, indent=1)
        print()
        return
    parser.add_argument("store", type=Path)
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--sample", type=Path, default=None)
    parser.add_argument("--truth", action="store_true", help="the store's ground truth")
    parser.add_argument("--causes", default=None, help="the user's junk causes, a,b")
    parser.add_argument(
        "--model", default=None, help="default: vgg16-hed-grid, with --truth pixels (the renders')"
    )
    parser.add_argument("--reviews", default="20,40,80,160")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--order", choices=["random", "top", "mixed", "balanced", "doubt"], default="random"
    )
    parser.add_argument(
        "--round", type=int, default=20, help="--order doubt: reviews between two fits"
    )
    parser.add_argument(
        "--hold-half",
        action="store_true",
        help="review only the sample's frames, every other one in time order, and measure on "
        "the others (one test set for every order)",
    )
    parser.add_argument(
        "--complete",
        action="store_true",
        help="the labels name every junk frame (a camera looked at whole): a frame without a "
        "label is normal and the user may review any daylight frame",
    )
    parser.add_argument("--min-reviews", type=int, default=5)
    args = parser.parse_args()
    if (args.labels is None) != args.truth:
        sys.exit("give --labels (a real camera's) or --truth (a render's ground truth)")
    if args.round < 1:
        sys.exit(f"--round must be at least 1, not {args.round}")
    if args.complete and args.truth:
        sys.exit("--complete is for --labels: a render's ground truth names every frame")
    args.model = args.model or ("pixels" if args.truth else "vgg16-hed-grid")
    try:
        sizes = [int(x) for x in args.reviews.split(",")]
    except ValueError:
        sys.exit(f"--reviews must be whole numbers, a,b: not {args.reviews!r}")

    from pipeline.detectors.learned import Learned
    from store.facts import meeting_rank

    causes = args.causes.split(",") if args.causes else None
    pcts, consensus, view, table = load(args.store, args.model, args.labels, args.sample, causes)
    junk = table["junk"].to_numpy(bool)
    in_sample = (
        (table["day"] & table["labelled"] & table["in_sample"].astype(bool)).to_numpy().copy()
    )
    reviewable = (table["day"] & table["labelled"]).to_numpy().copy()
    if args.complete:  # every junk frame is labelled: the others are normal, all reviewable
        reviewable = (table["day"] & (table["label"] != "debatable")).to_numpy().copy()
    if args.hold_half:  # the sample's frames in time order: every other one the test set of
        # every order; the rest reviewable (the sample's alone, unless the labels are complete:
        # junk noticed beyond a sample is not a random draw)
        held = np.flatnonzero(in_sample)[1::2]
        reviewable = reviewable if args.complete else in_sample.copy()
        reviewable[held] = False
        in_sample[:] = False
        in_sample[held] = True
    pool = np.flatnonzero(reviewable)

    fitted_for: dict[bytes, np.ndarray | None] = {}  # a larger K replays a smaller K's rounds

    def least_sure(reviewed: np.ndarray) -> np.ndarray | None:
        """Each frame's distance from the `learned` rank where these reviews meet, as "One by
        one" measures it on the run `analyze` fits on them; None where it would not fit."""
        key = reviewed.tobytes()
        if key not in fitted_for:
            fitted_for[key] = None
            if min(junk[reviewed].sum(), (~junk[reviewed]).sum()) >= args.min_reviews:
                model = Learned(list(pcts)).fit(pcts, consensus, reviewed, junk[reviewed], view)
                ranks = model.percentile(model.decision_scores_)
                fitted_for[key] = np.abs(ranks - meeting_rank(ranks[reviewed], junk[reviewed]))
        return fitted_for[key]

    rows = []
    for k in sizes:
        for seed in range(args.seeds if args.order != "top" else 1):
            if args.order == "doubt":
                reviewed = _reviewed_by_doubt(
                    pool, consensus, k, seed, junk, least_sure, args.round
                )
            else:
                reviewed = _reviewed(args.order, pool, consensus, k, seed, junk)
            rest = in_sample.copy()
            rest[reviewed] = False
            row = {
                "reviews": len(reviewed),
                "seed": seed,
                "junk": int(junk[reviewed].sum()),
                "keep": int((~junk[reviewed]).sum()),
                "consensus": measure(junk[rest], consensus[rest]),
            }
            if min(row["junk"], row["keep"]) < args.min_reviews:
                row["learned"] = None
            else:
                model = Learned(list(pcts)).fit(pcts, consensus, reviewed, junk[reviewed], view)
                row["learned"] = measure(junk[rest], model.decision_scores_[rest])
                row["cross_validated"] = model.cross_validated_
            rows.append(row)
    summary = {}
    for k in sorted({r["reviews"] for r in rows}):
        fitted = [r for r in rows if r["reviews"] == k and r["learned"] and r["consensus"]]
        summary[str(k)] = {
            "runs": sum(r["reviews"] == k for r in rows),
            "fitted": len(fitted),
            "consensus_mean": _mean([r["consensus"] for r in fitted]),
            "learned_mean": _mean([r["learned"] for r in fitted]),
            "worst_ap_change": round(min(r["learned"][1] - r["consensus"][1] for r in fitted), 3)
            if fitted
            else None,
        }
    json.dump(
        {
            "store": str(args.store),
            "model": args.model,
            "order": args.order,
            "round": args.round if args.order == "doubt" else None,
            "causes": causes,
            "sample_day_frames": int(in_sample.sum()),
            "summary": summary,
            "runs": rows,
        },
        sys.stdout,
        indent=1,
    )
    print()


def _reviewed(order: str, pool: np.ndarray, consensus: np.ndarray, k: int, seed: int, junk):
    """The K frames of `pool` a user reviews: at random, the consensus's top, `mixed`: the
    top and a random frame of the rest in turn, or `balanced`: the top while fewer are junk
    than keep, else a random one."""
    k = min(k, len(pool))
    top = pool[np.argsort(-consensus[pool], kind="stable")]
    if order == "top":
        return np.sort(top[:k])
    shuffled = np.random.default_rng(seed).permutation(pool)
    if order == "random":
        return np.sort(shuffled[:k])
    picked: list[int] = []
    seen: set[int] = set()
    tops, rands = iter(top), iter(shuffled)
    n_junk = 0
    while len(picked) < k:
        if order == "mixed":
            source = tops if len(picked) % 2 == 0 else rands
        else:
            source = tops if n_junk <= len(picked) - n_junk else rands
        for i in source:
            if i not in seen:
                seen.add(i)
                picked.append(int(i))
                n_junk += bool(junk[i])
                break
    return np.sort(np.array(picked))


def _reviewed_by_doubt(
    pool: np.ndarray, consensus: np.ndarray, k: int, seed: int, junk, least_sure, rounds: int
) -> np.ndarray:
    """The K frames of `pool` a user reviews who is offered the frames `learned` is least sure
    of: `mixed` until `least_sure(reviewed)` gives each frame's distance from the reviews'
    meeting rank (not None), then each round of `rounds` reviews the unreviewed frames nearest
    it first (ties by position)."""
    k = min(k, len(pool))
    picked = _reviewed("mixed", pool, consensus, min(rounds, k), seed, junk)
    while len(picked) < k:
        n = min(k, len(picked) + rounds)
        sure = least_sure(picked)
        if sure is None:  # the mixed picks so far are the first of the mixed order's
            picked = _reviewed("mixed", pool, consensus, n, seed, junk)
            continue
        left = np.setdiff1d(pool, picked)
        more = left[np.argsort(sure[left], kind="stable")][: n - len(picked)]
        picked = np.sort(np.concatenate([picked, more]))
    return picked


def _mean(pairs: list) -> list[float] | None:
    return np.round(np.mean(pairs, axis=0), 3).tolist() if pairs else None


if __name__ == "__main__":
    main()
