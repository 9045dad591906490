"""Junk causes from a user's reviews, simulated on a real camera's labels; prints JSON.

    .venv/bin/python bench/suggest_causes.py STORE --labels LABELS.csv [--sample SAMPLE.txt]
        [--reviews 40,80,160] [--seeds 5] [--order random|top] [--model vgg16-hed-grid]
    .venv/bin/python bench/suggest_causes.py STORE --truth   # a render's stored ground truth

STORE is a store `bench/realcam.py` analysed (its latest complete run of `--model`), or with
`--truth` one `bench/quality.py` made (its ground truth; every daylight frame is the sample). A
simulated user reviews K labelled daylight frames (`debatable` left out) and marks each junk
or keep as labelled: `random` reviews K frames drawn at random (a seed each), `top` the K
highest by the run's consensus (what the dashboard's "One by one" review shows first; seeds
do not apply). For each, the sidebar's suggestion (`dashboard.metrics.suggest_causes`, from
the run's causes) and the consensus of the run's own causes and of the suggested ones over the
sample frames the user did not review (ROC-AUC / AP, daylight, as `bench/realcam.py`).
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


def labelled(store_path: Path, model: str, labels: Path | None, sample: Path | None):
    """(daylight frames with a junk/normal label: a table with `junk`, `in_sample` and one
    column per stored cause; the run's causes; its own junk causes)."""
    import realcam

    import store
    from store import analysis as sa
    from store import facts
    from store.causes import cause_key

    with store.connect(store_path, read_only=True) as con:
        runs = sa.latest_complete_runs(con)
        if model not in runs:
            sys.exit(f"no complete {model} run in {store_path} (--model)")
        opts = facts.options(con, runs[model])
        truth = sa.load_ground_truth(con) if labels is None else None
        if truth is not None:
            wide = sa.run_scores(con, runs[model], truth["frame_id"].to_numpy()).pivot(
                index="frame_id", columns="detector", values="score"
            )
    if truth is None:
        _, table, _ = realcam.load_scored(
            store_path, model, realcam.read_labels(labels), realcam.read_sample(sample)
        )
        table = table[table["label"].isin(["junk", "normal"])]
        table = table.assign(junk=table["label"] == "junk")
    else:
        table = truth.merge(wide, left_on="frame_id", right_index=True)
        table = table.assign(junk=table["is_anomaly"].astype(bool), in_sample=True)
    table = table[table["daylight"] == "day"].copy()
    for cause in opts["causes"]:
        table[cause] = table[cause_key(cause)].astype(float)
    return table.reset_index(drop=True), list(opts["causes"]), list(opts["junk_causes"])


def measure(rest, causes) -> list[float] | None:
    """[ROC-AUC, AP] of the sum of `causes` over `rest`; None without both junk and keep."""
    from pipeline.evaluate import metrics

    if rest["junk"].all() or not rest["junk"].any():
        return None
    got = metrics(rest["junk"].to_numpy(), np.nansum(rest[list(causes)].to_numpy(), axis=1))
    return [round(got["roc_auc"], 3), round(got["average_precision"], 3)]


def _mean(pairs: list) -> list[float] | None:
    return np.round(np.mean(pairs, axis=0), 3).tolist() if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--sample", type=Path, default=None)
    parser.add_argument("--truth", action="store_true", help="the store's ground truth")
    parser.add_argument(
        "--model", default=None, help="default: vgg16-hed-grid, with --truth pixels (the renders')"
    )
    parser.add_argument("--reviews", default="40,80,160")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--order", choices=["random", "top"], default="random")
    args = parser.parse_args()
    if (args.labels is None) != args.truth:
        sys.exit("give --labels (a real camera's) or --truth (a render's ground truth)")
    args.model = args.model or ("pixels" if args.truth else "vgg16-hed-grid")

    from dashboard.metrics import suggest_causes

    table, causes, own = labelled(args.store, args.model, args.labels, args.sample)
    own = own or causes
    rows = []
    for k in (int(x) for x in args.reviews.split(",")):
        for seed in range(args.seeds if args.order == "random" else 1):
            if args.order == "random":
                reviewed = table.sample(min(k, len(table)), random_state=seed)
            else:
                order = np.argsort(-np.nansum(table[own].to_numpy(), axis=1), kind="stable")
                reviewed = table.iloc[order[:k]]
            got = suggest_causes(reviewed, own, causes)
            rest = table[table["in_sample"] & ~table.index.isin(reviewed.index)]
            row = {
                "reviews": len(reviewed),
                "seed": seed,
                "junk": int(reviewed["junk"].sum()),
                "keep": int((~reviewed["junk"]).sum()),
                "own": measure(rest, own),
            }
            if got is None:
                row["suggested"] = None
            else:
                row.update(
                    suggested=list(got.causes),
                    steps=list(got.steps),
                    auc_over_reviews=[got.auc_now, got.auc],
                    after=measure(rest, got.causes),
                )
            rows.append(row)
    summary = {}
    for k in sorted({r["reviews"] for r in rows}):
        part = [r for r in rows if r["reviews"] == k]
        made = [r for r in part if r.get("suggested") is not None]
        measured = [r for r in part if r["own"] is not None]
        summary[str(k)] = {
            "runs": len(part),
            "changed": sum(bool(r.get("steps")) for r in part),
            "own_mean": _mean([r["own"] for r in measured]),
            "after_mean": _mean([r.get("after", r["own"]) for r in measured]),
            "suggested": sorted({"+".join(r["suggested"]) for r in made}),
        }
    json.dump(
        {
            "store": str(args.store),
            "model": args.model,
            "order": args.order,
            "frames": len(table),
            "causes": causes,
            "own": own,
            "summary": summary,
            "runs": rows,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
