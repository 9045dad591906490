"""The consensus of analysed stores counted another way, from their stored scores; prints JSON.

    .venv/bin/python bench/recount.py STORE [STORE ...] [--model vgg16-hed-grid]
        [--causes quality,camera ...] [--recount-start DET=P ...] [--recount-add DET ...]
        [--recount-drop DET ...] [--recount-rule RULE]

A lead about how the consensus counts (a detector's evidence from another rank, a detector
counted or left out, another rule) is measured here in seconds, without analysing again: the
model's latest complete run of each STORE is re-counted with the pipeline's own arithmetic
(`counted_ranks`, `cause_scores`, `sum_causes`) over its stored scores and fitted state.

- `--recount-start DET=P`: DET's ranks count as evidence from its P-th percentile (0 <= P < 1)
  instead of the run's start;
- `--recount-add DET`: count a detector the run scored but its consensus left out (`same_time`,
  `blurry`, ...), from its class's start;
- `--recount-drop DET`: leave a detector out;
- `--recount-rule RULE`: combine each cause's detectors by another rule.

For each STORE with ground truth (a render from `bench/quality.py` or `make demo`), the
report gives the stored consensus and the re-counted one (`consensus-recount`, the run's own
junk causes; `consensus-recount[a+b]` per `--causes`) on daylight frames as `pipeline
evaluate` measures them: ROC-AUC, average precision, and per kind against the normal frames.
`reproduces_stored` says whether re-counting with the run's own settings gives the stored
consensus exactly (every frame within 1e-9): the check that the re-count is the run's own.

A real camera's store is re-counted against its hand labels by `bench/realcam.py
--no-analyze` with the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECOUNT = "consensus-recount"


@dataclasses.dataclass
class Change:
    """How to count the consensus otherwise: detector -> start, detectors added and dropped,
    another rule (None: the run's)."""

    starts: dict[str, float] = dataclasses.field(default_factory=dict)
    add: list[str] = dataclasses.field(default_factory=list)
    drop: list[str] = dataclasses.field(default_factory=list)
    rule: str | None = None

    def __bool__(self) -> bool:
        return bool(self.starts or self.add or self.drop or self.rule)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--recount-*` options (this script's and `bench/realcam.py`'s)."""
    parser.add_argument(
        "--recount-start",
        action="append",
        default=[],
        metavar="DET=P",
        help="count DET's evidence from its P-th percentile, 0 <= P < 1 (repeatable)",
    )
    parser.add_argument(
        "--recount-add",
        action="append",
        default=[],
        metavar="DET",
        help="count a detector the consensus left out (repeatable)",
    )
    parser.add_argument(
        "--recount-drop",
        action="append",
        default=[],
        metavar="DET",
        help="leave a detector out of the consensus (repeatable)",
    )
    parser.add_argument("--recount-rule", default=None, help="combine each cause by this rule")


def change_of(args: argparse.Namespace) -> Change:
    """The `--recount-*` options as a `Change` (a clear exit for a malformed `DET=P`)."""
    starts = {}
    for pair in args.recount_start:
        key, sep, value = pair.partition("=")
        try:
            starts[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            sys.exit(f"--recount-start {pair!r}: give DET=P, e.g. exposure=0.95")
    return Change(starts, list(args.recount_add), list(args.recount_drop), args.recount_rule)


def causes_of(groups: list[str]) -> list[list[str]]:
    """`--causes a,b` options as lists of known causes (a clear exit for an unknown one)."""
    from pipeline.causes import check_causes

    try:
        return [check_causes(group.split(","), "--causes") for group in groups]
    except ValueError as exc:
        sys.exit(str(exc))


def recounted(db: Path, run_id: int, change: Change, causes: list[list[str]]):
    """(frame ids, {column: each frame's score}, what was counted) for the run's consensus
    counted as `change` says: `RECOUNT` over the run's junk causes and `RECOUNT[a+b]` per
    entry of `causes`. What was counted: keys, starts, rule, junk causes, columns and
    `reproduces_stored` (the run's own settings re-counted give its stored consensus)."""
    import numpy as np

    import store
    from bench.quality import frames_batch
    from pipeline.causes import CAUSES
    from pipeline.detectors import CONSENSUS_RULES
    from pipeline.detectors.consensus import (
        cause_scores,
        counted_ranks,
        evidence_starts,
        sum_causes,
    )
    from pipeline.fitted import FittedRun
    from store import analysis as sa

    with store.connect(db, read_only=True) as con:
        artifact, _ = sa.load_fitted(con, run_id)
        long = sa.run_scores(con, run_id)
    fitted = FittedRun.from_bytes(artifact)
    consensus = fitted.consensus
    raw = long.pivot(index="frame_id", columns="detector", values="score")
    pct = long.pivot(index="frame_id", columns="detector", values="score_pct")
    known = [k for k in fitted.detectors if k in raw]
    for key in [*change.starts, *change.add, *change.drop]:
        if key not in known:
            sys.exit(f"--recount-*: the run has no detector {key!r}; it has {', '.join(known)}")
    for key, start in change.starts.items():
        if not 0.0 <= start < 1.0:
            sys.exit(f"--recount-start {key}={start}: a start is a percentile rank in [0, 1)")
    rule = change.rule or consensus.rule
    if rule not in CONSENSUS_RULES:
        sys.exit(f"--recount-rule {rule}: known rules are {', '.join(CONSENSUS_RULES)}")
    keys = list(dict.fromkeys(k for k in [*consensus.keys, *change.add] if k not in change.drop))
    if not keys:
        sys.exit("--recount-drop: no detector left to count")
    ranks = counted_ranks(
        {k: fitted.detectors[k] for k in dict.fromkeys([*consensus.keys, *keys])},
        {k: raw[k].to_numpy(float) for k in raw},
        {k: pct[k].to_numpy(float) for k in pct},
        frames_batch(db, raw.index.to_numpy(), fitted),
    )

    def by_cause(use_keys, use_rule, starts):
        pcts = {k: ranks[k] for k in use_keys}
        return cause_scores(pcts, use_rule, consensus.n_reference_, starts)

    own = consensus.junk_causes or list(CAUSES)
    again = sum_causes(by_cause(consensus.keys, consensus.rule, consensus.starts_), own)
    stored = raw["consensus"].to_numpy(float)
    known_both = np.isfinite(again) & np.isfinite(stored)
    reproduces = bool(
        (np.isfinite(again) == np.isfinite(stored)).all()
        and np.allclose(again[known_both], stored[known_both], rtol=0.0, atol=1e-9)
    )
    starts = {**evidence_starts(keys), **consensus.starts_, **change.starts}
    scores = by_cause(keys, rule, starts)
    columns = {RECOUNT: sum_causes(scores, own)}
    for names in causes:
        columns[f"{RECOUNT}[{'+'.join(names)}]"] = sum_causes(scores, names)
    counted = {
        "keys": keys,
        "starts": {k: starts[k] for k in keys},
        "rule": rule,
        "junk_causes": own,
        "columns": list(columns),
        "reproduces_stored": reproduces,
    }
    return raw.index.to_numpy(), {"consensus": stored, **columns}, counted


def daylight_figures(truth, frame_ids, scores) -> dict:
    """ROC-AUC, AP and per-kind ROC-AUC of `scores` (one per frame of `frame_ids`) over the
    daylight frames of `truth` (frame_id, is_anomaly, kind, daylight), a missing score filled
    with the median over the truth's frames as `pipeline.evaluate` does."""
    import numpy as np
    import pandas as pd

    from pipeline.evaluate import metrics

    data = truth.merge(pd.DataFrame({"frame_id": frame_ids, "s": scores}), on="frame_id")
    s = data["s"].to_numpy(float)
    if np.isfinite(s).any():
        s = np.where(np.isfinite(s), s, np.nanmedian(s))
    day = (data["daylight"] == "day").to_numpy()
    junk = data["is_anomaly"].to_numpy(bool)
    kinds = data["kind"].to_numpy(object)
    m = metrics(junk[day], s[day])
    out = {"auc": _r(m["roc_auc"]), "ap": _r(m["average_precision"]), "kinds": {}}
    for kind in sorted(set(kinds[day & junk])):
        keep = day & (~junk | (kinds == kind))
        out["kinds"][kind] = _r(metrics(junk[keep], s[keep])["roc_auc"])
    return out


def _r(value) -> float | None:
    value = float(value)
    return None if value != value else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stores", type=Path, nargs="+", help="analysed stores with ground truth")
    parser.add_argument("--model", default=None, help="embedding model (default: the pipeline's)")
    parser.add_argument(
        "--causes",
        action="append",
        default=[],
        metavar="CAUSE,...",
        help="also re-count the consensus of only these causes (repeatable)",
    )
    add_arguments(parser)
    args = parser.parse_args()

    import store
    from pipeline.settings import Settings
    from store import analysis as sa

    change = change_of(args)
    causes = causes_of(args.causes)
    model = args.model or Settings().model
    report: dict = {"model": model, "change": dataclasses.asdict(change), "stores": {}}
    for db in args.stores:
        if not db.is_file():
            sys.exit(f"{db}: no such store")
        with store.connect(db, read_only=True) as con:
            run_id = sa.latest_complete_runs(con).get(model)
            truth = sa.load_ground_truth(con)
        if run_id is None:
            sys.exit(f"{db}: no complete {model} run (run `python -m pipeline analyze` first)")
        if truth.empty:
            sys.exit(f"{db}: no ground truth (a real camera: bench/realcam.py --no-analyze)")
        frame_ids, columns, counted = recounted(db, run_id, change, causes)
        report["stores"][str(db)] = {
            "run_id": run_id,
            "recount": counted,
            "day": {name: daylight_figures(truth, frame_ids, s) for name, s in columns.items()},
        }
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
