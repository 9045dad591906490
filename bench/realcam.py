"""Detection quality on a real camera's frames against hand labels; prints JSON.

    .venv/bin/python bench/realcam.py FRAMES --labels LABELS.csv [--sample SAMPLE.txt]
        --out DIR [--timezone TZ --lat LAT --lon LON] [--model vgg16-hed-grid]
        [--config settings.toml] [--set KEY=VALUE ...] [--no-analyze] [--top 50]
        [--sheet top.png] [--causes quality,camera ...] [--top-detector KEY] [--confident]
        [--bootstrap 1000]

e.g. Kat Kam (../shared/realdata/katkam/README.md):

    .venv/bin/python bench/realcam.py /work/data/katkam/frames \
        --labels ../shared/realdata/katkam/labels.csv \
        --sample ../shared/realdata/katkam/sample.txt --out /work/data/katkam-run \
        --timezone America/Vancouver --lat 49.28 --lon -123.16

It ingests FRAMES into DIR/realcam.duckdb, embeds every frame that lacks a vector for the model,
and runs `analyze` (the pipeline's defaults, changed only by --config / --set), so a second
call with the same DIR only analyses again (`--no-analyze`: score the latest complete run).

Labels: a CSV `file,label,kind[,confidence]`, `file` relative to FRAMES, `label` one of `junk`,
`normal`, `debatable`. Measured on daylight frames only (the store's own `daylight` = 'day'),
`debatable` frames left out (with `--confident`, the `confidence=low` calls too: how much the
figures rest on borderline labels):
- `sample`: over the frames listed in the sample file (one file name a line: an unbiased
  sample), or over all labelled frames without one: ROC-AUC, average precision, the base rate;
- `kinds`: per junk kind, that kind's frames against the `normal` frames (ROC-AUC), over the
  sample and over all labelled frames (a hand-picked episode beyond the sample counts here);
- `top`: the consensus's (or `--top-detector`'s) top `--top` over ALL daylight frames with their
  labels (unlabelled ones marked), and the share of junk among them.
`--sheet FILE` draws that top as a PNG contact sheet of the stored thumbnails.
`--causes quality,camera` also measures the consensus of only those causes (the junk a user of
that camera counts): the sum of the run's stored cause scores, what `analyze --junk-causes
quality,camera` computes, without another run (`--top-detector "consensus[quality+camera]"`
ranks the top by it).
`--bootstrap N` adds how far each sample figure could move on another sample of the same size:
95% intervals of every detector's sample AUC and AP over N resamples of the sample frames (with
replacement, `scipy.stats.bootstrap`, percentile intervals, a fixed seed), and, on the same
resamples, each consensus minus every other score with the share of resamples it is ahead in,
so "the consensus is above `flat`" can be told from a difference the sample cannot resolve.

Re-counting the consensus another way, without analysing again (with `--no-analyze`, a lead
measured in seconds on the run's own scores): `--recount-start DET=P` counts DET's ranks as
evidence from its P-th percentile (0 <= P < 1) instead of the run's start, `--recount-add DET`
counts a detector the run scored but its consensus left out (`same_time`, `blurry`, ...) from
its class's start, `--recount-drop DET` leaves one out, `--recount-rule RULE` combines each
cause's detectors by another rule. The result is the column `consensus-recount` (the run's own
junk causes) and `consensus-recount[a+b]` for each `--causes`, measured, ranked and resampled
as the stored consensus is (`bench/recount.py` does the same for renders, against their
ground truth); `recount` in the report gives the keys, starts and rule used and
`reproduces_stored`: whether re-counting with the run's own settings gives its stored
consensus exactly (every frame's score within 1e-9), the check that the re-count is the
pipeline's own arithmetic (`counted_ranks`, `cause_scores`, `sum_causes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.recount import add_arguments, causes_of, change_of, recounted  # noqa: E402

LABELS = ("junk", "normal", "debatable")
STORE_NAME = "realcam.duckdb"


def read_labels(path: Path, confident: bool = False):
    """The labels CSV as a DataFrame: file, label, kind, confidence (checked); `confident`:
    a `low`-confidence call counts as `debatable` (left out of every measure)."""
    import pandas as pd

    labels = pd.read_csv(path, dtype=str)
    missing = {"file", "label", "kind"} - set(labels.columns)
    if missing:
        sys.exit(
            f"{path}: needs columns file,label,kind[,confidence]; it lacks "
            f"{', '.join(sorted(missing))}"
        )
    bad = sorted(set(labels["label"]) - set(LABELS))
    if bad:
        sys.exit(f"{path}: label must be one of {', '.join(LABELS)}, not {', '.join(bad)}")
    if "confidence" not in labels:
        labels["confidence"] = ""
    if confident:
        labels.loc[labels["confidence"].fillna("").str.strip() == "low", "label"] = "debatable"
    return labels.drop_duplicates("file", keep="last")


def read_sample(path: Path | None) -> set[str] | None:
    """File names of the unbiased sample, or None (= every labelled frame)."""
    if path is None:
        return None
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def parse_sets(pairs: list[str]) -> dict:
    """KEY=VALUE settings: lists split on commas, JSON numbers/booleans, else text."""
    from pipeline.settings import Settings

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            sys.exit(
                f"--set {pair}: expected KEY=VALUE with a known setting "
                f"({', '.join(sorted(fields))})"
            )
        if "list" in str(fields[key].type) or "tuple" in str(fields[key].type):
            out[key] = [v for v in value.split(",") if v]
            continue
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def prepare(frames: Path, db: Path, settings, analyse: bool) -> dict:
    """Ingest (new files only), embed (missing vectors only), analyse; returns timings."""
    from pipeline.analyze import analyze
    from pipeline.embed import embed_frames
    from pipeline.ingest import ingest_folder

    timings: dict = {}
    for name, step in (
        ("ingest_s", lambda: ingest_folder(frames, db, settings, progress=False)),
        ("embed_s", lambda: embed_frames(db, settings, progress=False)),
        ("analyze_s", lambda: analyze(db, settings, progress=False)),
    ):
        if name == "analyze_s" and not analyse:
            continue
        t = time.perf_counter()
        step()
        timings[name] = round(time.perf_counter() - t, 1)
    return timings


def load_scored(db: Path, model: str, labels, sample: set[str] | None):
    """(run_id, wide table): one row per frame with file, daylight, label, kind, in_sample and
    a column of scores per detector, from the model's latest complete run."""
    import store
    from store import analysis as sa
    from store import frames as sf

    with store.connect(db, read_only=True) as con:
        runs = sa.latest_complete_runs(con)
        if model not in runs:
            sys.exit(f"no complete {model} run in {db}: run without --no-analyze")
        run_id = runs[model]
        long = sa.run_scores(con, run_id)
        frames = sf.list_frames(con)
        daylight = sa.frame_daylight(con, frames["frame_id"].to_numpy())
    wide = long.pivot(index="frame_id", columns="detector", values="score")
    frames["file"] = frames["path"]
    matched = frames.merge(labels, on="file", how="left")
    if matched["label"].notna().sum() < len(labels):  # labels relative to a sub-folder
        name = frames["path"].str.rsplit("/", n=1).str[-1]
        matched = frames.assign(file=name).merge(labels, on="file", how="left")
    table = matched.merge(daylight, on="frame_id").merge(wide, left_on="frame_id", right_index=True)
    table["in_sample"] = (
        table["file"].isin(sample) if sample is not None else table["label"].notna()
    )
    return run_id, table.sort_values("frame_id").reset_index(drop=True), list(wide.columns)


def add_consensus_of(table, causes: list[str]) -> str:
    """Add the consensus a user counting only `causes` gets (`consensus[quality+camera]`): the
    sum of the run's stored cause scores (`cause:<cause>`), as `analyze --junk-causes` sums
    them (a cause without an opinion on a frame adds nothing); returns its column name."""
    import numpy as np

    from pipeline.causes import check_causes
    from store.causes import cause_key

    try:
        causes = check_causes(causes, "--causes")
    except ValueError as exc:
        sys.exit(str(exc))
    missing = [cause_key(c) for c in causes if cause_key(c) not in table]
    if missing:
        sys.exit(f"--causes: the run has no {', '.join(missing)} (a run made before causes?)")
    name = f"consensus[{'+'.join(causes)}]"
    table[name] = np.nansum(
        np.column_stack([table[cause_key(c)].astype(float) for c in causes]), axis=1
    )
    return name


def filled(scores):
    """Scores with NaN (no opinion) replaced by the median, as `pipeline.evaluate` does."""
    import numpy as np

    scores = scores.astype(float).to_numpy()
    if np.isfinite(scores).any():
        scores = np.where(np.isfinite(scores), scores, np.nanmedian(scores))
    return scores


def measure(table, detectors: list[str]) -> dict:
    """detector -> sample AUC/AP and per-kind AUCs (sample and all labelled), daylight only."""
    from pipeline.evaluate import metrics

    day = table[(table["daylight"] == "day") & table["label"].isin(["junk", "normal"])]
    parts = {"sample": day[day["in_sample"]], "labelled": day}
    out: dict = {}
    for detector in detectors:
        row: dict = {}
        for name, part in parts.items():
            is_junk = (part["label"] == "junk").to_numpy()
            scores = filled(part[detector])
            m = metrics(is_junk, scores)
            row[name] = {"auc": _r(m["roc_auc"]), "ap": _r(m["average_precision"])}
            kinds = {}
            for kind in sorted(part.loc[part["label"] == "junk", "kind"].unique()):
                keep = ((part["label"] == "normal") | (part["kind"] == kind)).to_numpy()
                kinds[kind] = _r(metrics(is_junk[keep], scores[keep])["roc_auc"])
            row[name]["kinds"] = kinds
        out[detector] = row
    return out


def bootstrap(table, detectors: list[str], resamples: int, seed: int = 0) -> dict:
    """95% intervals of each detector's sample AUC and AP over `resamples` resamples of the
    sample's daylight frames, and each consensus column minus every other detector on the same
    resamples (paired): its interval and the share of resamples where the consensus is ahead
    (ties count half). Percentile intervals of the resamples that hold both junk and normal
    frames (on a small sample some hold no junk and measure nothing)."""
    import numpy as np
    from scipy.stats import bootstrap as scipy_bootstrap
    from sklearn.metrics import average_precision_score, roc_auc_score

    day = table[(table["daylight"] == "day") & table["label"].isin(["junk", "normal"])]
    part = day[day["in_sample"]]
    is_junk = (part["label"] == "junk").to_numpy()
    scores = np.column_stack([filled(part[d]) for d in detectors])

    def auc_and_ap(rows):
        labels = is_junk[rows]
        if labels.all() or not labels.any():
            return np.full(2 * len(detectors), np.nan)
        return np.array(
            [roc_auc_score(labels, scores[rows, j]) for j in range(len(detectors))]
            + [average_precision_score(labels, scores[rows, j]) for j in range(len(detectors))]
        )

    result = scipy_bootstrap(
        (np.arange(len(part)),),
        auc_and_ap,
        vectorized=False,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    draws = result.bootstrap_distribution  # [2 * detectors, resamples]
    draws = draws[:, np.isfinite(draws).all(axis=0)]  # a resample without junk measures nothing

    def interval(values):
        return [_r(np.percentile(values, 2.5)), _r(np.percentile(values, 97.5))]

    n = len(detectors)
    out: dict = {
        "resamples": resamples,
        "resamples_with_junk_and_normal": int(draws.shape[1]),
        "seed": seed,
        "frames": int(len(part)),
        "intervals": {
            d: {"auc": interval(draws[j]), "ap": interval(draws[n + j])}
            for j, d in enumerate(detectors)
        },
    }
    for i, reference in enumerate(detectors):
        if not reference.startswith("consensus"):
            continue
        versus = {}
        for j, other in enumerate(detectors):
            if other.startswith("consensus"):
                continue
            row = {}
            for metric, k in (("auc", 0), ("ap", n)):
                diff = draws[k + i] - draws[k + j]
                row[metric] = interval(diff)
                tie = np.isclose(diff, 0.0, rtol=0.0, atol=1e-9)
                row[f"ahead_{metric}"] = _r(((diff > 0) & ~tie).mean() + 0.5 * tie.mean())
            versus[other] = row
        out[f"{reference} minus"] = versus
    return out


def counts(table) -> dict:
    """How many daylight frames each measure is over."""
    day = table[(table["daylight"] == "day") & table["label"].isin(["junk", "normal"])]
    out = {"frames": int(len(table)), "daylight_frames": int((table["daylight"] == "day").sum())}
    for name, part in (("sample", day[day["in_sample"]]), ("labelled", day)):
        junk = part[part["label"] == "junk"]
        out[name] = {
            "n": int(len(part)),
            "n_junk": int(len(junk)),
            "base_rate": _r(len(junk) / len(part)) if len(part) else None,
            "kinds": {k: int(v) for k, v in junk["kind"].value_counts().items()},
        }
    return out


def top_frames(table, detector: str, k: int) -> dict:
    """The detector's top k over all daylight frames, with labels; precision = junk share."""
    day = table[table["daylight"] == "day"].assign(_s=lambda t: filled(t[detector]))
    top = day.sort_values("_s", ascending=False, kind="stable").head(k)
    rows = [
        {
            "rank": i + 1,
            "file": f,
            "score": _r(s),
            "label": lab if isinstance(lab, str) else "unlabelled",
            "kind": kind if isinstance(kind, str) else None,
        }
        for i, (f, s, lab, kind) in enumerate(
            zip(top["file"], top["_s"], top["label"], top["kind"])
        )
    ]
    n = {lab: sum(r["label"] == lab for r in rows) for lab in (*LABELS, "unlabelled")}
    labelled = n["junk"] + n["normal"] + n["debatable"]
    return {
        "detector": detector,
        "k": len(rows),
        "counts": n,
        "precision": _r(n["junk"] / len(rows)) if rows else None,
        "precision_labelled": _r(n["junk"] / labelled) if labelled else None,
        "frames": rows,
    }


def contact_sheet(db: Path, table, top: dict, path: Path, columns: int = 10) -> None:
    """A PNG grid of the top frames' stored thumbnails, each captioned rank, label and kind."""
    import io

    from PIL import Image, ImageDraw

    import store
    from store import frames as sf

    ids = dict(zip(table["file"], table["frame_id"]))
    wanted = [ids[r["file"]] for r in top["frames"]]
    with store.connect(db, read_only=True) as con:
        thumbs = sf.thumbnails(con, wanted)
    jpeg = dict(zip(thumbs["frame_id"], thumbs["jpeg"]))
    cell_w, cell_h, caption = 256, 192, 28
    rows = (len(wanted) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * (cell_h + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    colours = {"junk": "darkred", "normal": "darkgreen", "debatable": "darkorange"}
    for i, (row, frame_id) in enumerate(zip(top["frames"], wanted)):
        x, y = (i % columns) * cell_w, (i // columns) * (cell_h + caption)
        if frame_id in jpeg:
            image = Image.open(io.BytesIO(bytes(jpeg[frame_id]))).convert("RGB")
            image.thumbnail((cell_w, cell_h))
            sheet.paste(image, (x, y))
        stamp = row["file"].rsplit("/", 1)[-1].rsplit(".", 1)[0][-14:]
        draw.text((x + 3, y + cell_h + 1), f"{row['rank']} {stamp}", fill="black")
        draw.text(
            (x + 3, y + cell_h + 14),
            f"{row['label']} {row['kind'] or ''}",
            fill=colours.get(row["label"], "blue"),
        )
    sheet.save(path)


def _r(value) -> float | None:
    value = float(value)
    return None if value != value else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", type=Path, help="the folder of frames")
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="CSV file,label,kind[,confidence] (label junk/normal/debatable)",
    )
    parser.add_argument(
        "--sample",
        type=Path,
        default=None,
        help="file names of an unbiased sample, one a line (default: every labelled frame)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help=f"folder of the store ({STORE_NAME}); an existing store is reused",
    )
    parser.add_argument("--timezone", default=None)
    parser.add_argument("--lat", type=float, default=None)
    parser.add_argument("--lon", type=float, default=None)
    parser.add_argument("--model", default=None, help="embedding model (default: the pipeline's)")
    parser.add_argument("--config", type=Path, default=None, help="settings TOML for analyze")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting (repeatable); lists comma-separated",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="score the latest complete run instead of analysing again",
    )
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument(
        "--top-detector",
        default="consensus",
        help="rank the top by this detector (or by consensus[a+b] of --causes)",
    )
    parser.add_argument(
        "--causes",
        action="append",
        default=[],
        metavar="CAUSE,...",
        help="also measure the consensus of only these causes, summed from the "
        "run's stored cause scores as --junk-causes would (repeatable)",
    )
    parser.add_argument("--sheet", type=Path, default=None, help="write the top as a PNG")
    parser.add_argument(
        "--confident",
        action="store_true",
        help="leave the low-confidence labels out too, as debatable ones are",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="add 95%% intervals of the sample figures over N resamples (e.g. 1000)",
    )
    add_arguments(parser)
    args = parser.parse_args()

    from pipeline.settings import Settings

    if not args.frames.is_dir():
        sys.exit(f"{args.frames} is not a folder of frames")
    labels = read_labels(args.labels, args.confident)
    sample = read_sample(args.sample)
    settings = Settings.load(
        args.config,
        timezone=args.timezone,
        lat=args.lat,
        lon=args.lon,
        model=args.model,
        **parse_sets(args.sets),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / STORE_NAME
    timings = prepare(args.frames, db, settings, analyse=not args.no_analyze)
    run_id, table, detectors = load_scored(db, settings.model, labels, sample)
    for causes in args.causes:
        name = add_consensus_of(table, causes.split(","))
        detectors.append(name)
    change = change_of(args)
    counted = None
    if change:
        frame_ids, columns, counted = recounted(db, run_id, change, causes_of(args.causes))
        at = table["frame_id"].map({f: i for i, f in enumerate(frame_ids)}).to_numpy()
        for name in counted["columns"]:
            table[name] = columns[name][at]
            detectors.append(name)
    if args.top_detector not in detectors:
        sys.exit(f"--top-detector {args.top_detector}: the run has {', '.join(detectors)}")
    detectors = sorted(detectors, key=lambda d: (d != "consensus", d))
    top = top_frames(table, args.top_detector, args.top)
    if args.sheet is not None:
        contact_sheet(db, table, top, args.sheet)
    report = {
        "frames": str(args.frames),
        "labels": str(args.labels),
        "low_confidence_left_out": bool(args.confident),
        "sample": str(args.sample) if args.sample else "all labelled frames",
        "store": str(db),
        "model": settings.model,
        "run_id": run_id,
        "settings_changed": {
            k: v for k, v in settings.to_dict().items() if v != getattr(Settings(), k)
        },
        "timings": timings,
        "counts": counts(table),
        "detectors": measure(table, detectors),
        "top": top,
    }
    if counted is not None:
        report["recount"] = counted
    if args.bootstrap:
        report["bootstrap"] = bootstrap(table, detectors, args.bootstrap)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
