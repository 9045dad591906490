"""Incidents: runs of frames the consensus flags, each with a plain cause, found at analysis time.

Junk comes in episodes (a knocked camera for an afternoon, a foggy morning, drops after a
shower), so `analyze` groups the consensus's flags into incidents and writes them with the run.

- **Which frames.** Daylight frames only ('day' and 'twilight'): a night is not an incident. A
  twilight frame is judged like a day frame (the background detector fits dusk against dusk and
  the time-lapse detectors divide by the hour's typical change, so an ordinary dusk is not
  flagged; on the demo 5 % of twilight frames are, the same base rate as day frames). Frames
  without a camera-clock time take no part.
- **Which runs.** Frames in camera-clock order (taken_at, then frame_id). Two flagged frames are
  one incident when at most `gap` unflagged daylight frames lie between them (setting
  `incident_gap_frames`); a night frame between them ends the incident, and so does a new day
  of the camera clock (a camera that takes no frames at night has no night frame between two
  days: Kat Kam's one incident of 30 frames ran over three nights), so an incident never
  spans a night (a camera knocked for three days is three incidents, one per day). Not on a
  camera that takes a frame a day or fewer (the median gap between its frames in time order
  `DAILY_GAP` or more): there each frame is a day of its own, and weeks of green water in a
  tank (the aquarium camera: 1,500 frames at 17:40 over three years) are one incident, not
  forty.
- **What an incident holds.** Its frames run from the first to the last flagged one, the
  unflagged frames between included (marking an incident junk marks them all); start and end
  are the first and last flagged frame's times; the peak is the highest consensus score, and
  its frame is the representative.
- **Its cause** (`cause_evidence` and `name_cause`, the one rule): the plain cause with the
  largest tail evidence summed over the incident's flagged frames. A frame's evidence for a
  plain cause is the largest tail evidence -log(1 - rank) (as the consensus counts it; the
  quality checks by their ranks as they stand, `cause_evidence`) among
  the consensus's detectors of that plain cause whose cause of junk the user counts
  (`junk_causes`: a building site's diggers name no incident), each detector's evidence first
  split among plain causes by its `cause_split` (`exposure`: too dark, too bright, or fog or
  haze for a brighter frame under `own.WASHED_OUT_LUMA`; `soft` and `flat`: too dark on a frame
  under `own.DIM_LUMA`, however dark its pool). Causes whose sums come within
  `CAUSE_TIE` of the largest count as tied, and the order of `PLAIN_CAUSES` picks among them:
  at the top of the ranks a few places decide little (a black frame is among the darkest,
  flattest and least sharp frames at once, in whichever order), and one cause brings another's
  signs with it (dark frames are flat, fog is bright). The winner's share of the summed
  evidence of every cause is kept as `cause_share`.

**Named again for other causes** (`cause_evidence_rows`): a reader may count other causes than
the run's (`store.causes` recombines the consensus in SQL and finds its incidents again), so
`analyze` also stores each daylight frame's evidence per plain cause, split by the cause of
junk of the detectors it comes from (`frame_cause_evidence`), for the frames some choice of
causes could flag: those in the top `FLAGGABLE_MARGIN` x contamination of the sum of any
non-empty set of the run's causes. The recombined incident is named by the same rule from the
rows of the chosen causes; for the run's own causes that is the name stored here.

`score-new` and `watch` add frames to a run without recomputing its incidents: incidents are
a fact of the analysis, and the next `analyze` finds them again over every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from pipeline.causes import CAUSES
from pipeline.detectors import CONSENSUS, DETECTORS, PLAIN_CAUSES, Consensus, Detector
from pipeline.detectors.consensus import counted_ranks, extremity, tail_evidence
from store.aggregates import INCIDENT_COLUMNS
from store.causes import CAUSE_TIE, DAILY_GAP_S, cause_key

DAYLIGHT = ("day", "twilight")
UNKNOWN_CAUSE = "unusual"  # the name when no detector's evidence is above nothing
# A camera whose frames are this far apart as a rule (the median gap in time order) takes about
# one a day: a new day of its clock does not end an incident (store.causes: the same rule)
DAILY_GAP = np.timedelta64(DAILY_GAP_S, "s")
# frames whose evidence is kept for other choices of causes: in the top FLAGGABLE_MARGIN x
# contamination of some causes' sum (a margin over the share a consensus flags, for the
# frames `score-new` adds to the reference later)
FLAGGABLE_MARGIN = 1.5
EVIDENCE_COLUMNS = ("frame_id", "cause", "plain_cause", "evidence")


@dataclass
class Incidents:
    """A run's incidents (`table`: one row per incident, `INCIDENT_COLUMNS`) and their frames
    (`frames`: incident_id, frame_id, is_flagged), as `store.aggregates.write` takes them, and
    the evidence that names other causes' incidents (`evidence`: `cause_evidence_rows`)."""

    table: pd.DataFrame
    frames: pd.DataFrame
    evidence: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(EVIDENCE_COLUMNS))
    )

    def __len__(self) -> int:
        return len(self.table)


def cause_evidence(
    pcts: dict[str, np.ndarray], splits: dict[str, dict[str, Any]], n_reference: int | None = None
) -> pd.DataFrame:
    """Per frame (rows in the order of the ranks), the evidence for each plain cause (one
    column per cause): the largest tail evidence among the detectors of that cause.

    The quality cause's detectors (`soft`, `flat`, `exposure`: each frame against the camera's
    own good frames under the same sun) compare by how far in their tails they rank a frame
    (`extremity`), not by the counted evidence, which stretches `exposure`'s ranks above its
    later start: counted, a black frame at `exposure` rank 0.995 brings 2.3 against `flat`'s
    6.2 at 0.998, and the demo's black frames were named "fog or haze" (on the three tuning
    renders 2 of 12 black incidents were named "too dark" and 1 of 12 washed-out ones "too
    bright"; ranked as they stand 9 and 11 of 12, and Kat Kam's incidents of frames labelled
    night "too dark" 5 -> 15 of 17). The other
    causes' detectors keep the counted evidence: `alignment`'s top twentieth is common on a
    real camera, and ranked as it stands it named 23 of Kat Kam's normal incidents "camera
    moved" (4 counted).

    `pcts`: each detector's ranks (0..1); `splits`: for the detectors that count (the
    consensus's), how their evidence divides among causes (`Detector.cause_split`: cause ->
    share per frame, or one share for every frame); `n_reference`: how many frames the ranks
    are among (the consensus's floor)."""
    keys = [k for k in splits if k in pcts]
    quality = {k: pcts[k] for k in keys if DETECTORS[k].cause == "quality"}
    others = {k: pcts[k] for k in keys if k not in quality}
    tails = {
        **(extremity(quality, n_reference) if quality else {}),
        **(tail_evidence(others, n_reference) if others else {}),
    }
    out: dict[str, np.ndarray] = {}
    for key in keys:
        for cause, share in splits[key].items():
            part = np.nan_to_num(tails[key]) * share
            out[cause] = np.maximum(out[cause], part) if cause in out else part
    return pd.DataFrame(out)


def name_cause(evidence: pd.DataFrame) -> tuple[str, float]:
    """The plain cause with the largest summed evidence over some frames' rows (near-ties,
    within `CAUSE_TIE`, broken by the order of `PLAIN_CAUSES`), and its share of the sum over
    every cause ("unusual", 0.0 when there is no evidence)."""
    totals = evidence.sum(axis=0)
    total = float(totals.sum())
    if evidence.empty or not total > 0:
        return UNKNOWN_CAUSE, 0.0
    best = float(totals.max())
    tied = [c for c in totals.index if totals[c] >= best * (1 - CAUSE_TIE)]
    cause = min(
        tied, key=lambda c: PLAIN_CAUSES.index(c) if c in PLAIN_CAUSES else len(PLAIN_CAUSES)
    )
    return str(cause), float(totals[cause] / total)


def find_incidents(
    frame_ids: np.ndarray,
    local_time: np.ndarray,
    daylight: np.ndarray | None,
    flags: np.ndarray,
    scores: np.ndarray,
    pcts: np.ndarray,
    evidence: pd.DataFrame,
    gap: int,
) -> Incidents:
    """Incidents among frames (every array in the same row order; `evidence` from
    `cause_evidence`, `local_time` datetime64 camera clock with NaT allowed, `daylight` the
    daylight class or None per frame, `flags`/`scores`/`pcts` the consensus's)."""
    if gap < 0:
        raise ValueError(f"the incident gap must be >= 0 frames, got {gap}")
    n = len(frame_ids)
    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    local_time = np.asarray(local_time, dtype="datetime64[ns]")
    classes = (
        np.full(n, None, dtype=object) if daylight is None else np.asarray(daylight, dtype=object)
    )
    timed = ~np.isnat(local_time)
    order = np.flatnonzero(timed)
    order = order[np.lexsort((frame_ids[order], local_time[order]))]
    eligible = np.isin(classes[order], DAYLIGHT)
    flagged = eligible & np.asarray(flags, dtype=bool)[order]
    # changes at every night (or unknown-daylight) frame, and at a new day of the camera
    # clock: a camera that takes no frames at night has no night frame between two days
    # (unless it takes a frame a day or fewer: `takes_frames_daily`)
    day = local_time[order].astype("datetime64[D]")
    new_day = np.r_[False, day[1:] != day[:-1]] & ~takes_frames_daily(local_time[order])
    segment = np.cumsum(~eligible | new_day)
    at = np.flatnonzero(flagged)  # positions in `order` of the flagged daylight frames
    if not len(at):
        return _empty()
    starts = np.r_[True, (segment[at[1:]] != segment[at[:-1]]) | (np.diff(at) - 1 > gap)]
    first, last = at[starts], at[np.r_[starts[1:], True]]
    rows, members = [], []
    for number, (lo, hi) in enumerate(zip(first, last), start=1):
        span = order[lo : hi + 1]
        hit = span[flagged[lo : hi + 1]]
        peak = hit[np.nanargmax(np.where(np.isfinite(scores[hit]), scores[hit], -np.inf))]
        cause, share = name_cause(evidence.iloc[hit])
        start, end = local_time[span[0]], local_time[span[-1]]
        rows.append(
            (
                number,
                start,
                end,
                (end - start) / np.timedelta64(1, "s"),
                len(span),
                len(hit),
                cause,
                share,
                float(scores[peak]),
                float(pcts[peak]),
                int(frame_ids[peak]),
            )
        )
        members.append(
            pd.DataFrame(
                {
                    "incident_id": number,
                    "frame_id": frame_ids[span],
                    "is_flagged": flagged[lo : hi + 1],
                }
            )
        )
    table = pd.DataFrame(rows, columns=list(INCIDENT_COLUMNS))
    return Incidents(table, pd.concat(members, ignore_index=True))


def takes_frames_daily(times: np.ndarray) -> bool:
    """Whether a camera takes about one frame a day or fewer: the median gap between its timed
    frames in time order (`times`, datetime64 in that order, NaT left out) is `DAILY_GAP` or
    more."""
    timed = times[~np.isnat(times)]
    return len(timed) >= 2 and bool(np.median(np.diff(timed)) >= DAILY_GAP)


def _empty() -> Incidents:
    return Incidents(
        pd.DataFrame(columns=list(INCIDENT_COLUMNS)),
        pd.DataFrame(columns=["incident_id", "frame_id", "is_flagged"]),
    )


def run_incidents(
    batch, scored, detectors: dict[str, Detector], consensus: Consensus, gap: int
) -> Incidents:
    """The incidents of an analysed batch (the `FrameBatch` the run was fitted on) from its
    `RunScores`."""
    counted = consensus.junk_causes or list(CAUSES)  # a cause the user does not count
    splits = {
        k: detectors[k].cause_split()
        for k in consensus.keys  # names no incident
        if k in detectors and detectors[k].cause in counted
    }
    ranks = counted_ranks(detectors, scored.scores, scored.pcts, batch)
    evidence = cause_evidence(ranks, splits, consensus.n_reference_)
    found = find_incidents(
        batch.frame_ids,
        batch.local_time,
        batch.daylight,
        scored.flags[CONSENSUS],
        scored.scores[CONSENSUS],
        scored.pcts[CONSENSUS],
        evidence,
        gap,
    )
    found.evidence = cause_evidence_rows(batch, scored, detectors, consensus, ranks)
    return found


def flaggable(by_cause: dict[str, np.ndarray], contamination: float) -> np.ndarray:
    """Frames (bool per row) above the quantile at 1 - `FLAGGABLE_MARGIN` x `contamination` of
    the sum of some non-empty set of the causes' scores (`by_cause`: cause -> score per frame,
    NaN for no opinion, as `sum_causes` adds them): every frame a consensus of some of them
    flags (above its quantile at 1 - contamination, no lower), and a margin. Strictly above:
    a cause with no evidence on most frames has a quantile of 0, and its zeros are not kept."""
    keep = np.zeros(len(next(iter(by_cause.values()))) if by_cause else 0, dtype=bool)
    share = min(1.0, FLAGGABLE_MARGIN * contamination)
    names = list(by_cause)
    for size in range(1, len(names) + 1):
        for chosen in combinations(names, size):
            summed = np.nansum(np.column_stack([by_cause[c] for c in chosen]), axis=1)
            keep |= summed > np.quantile(summed, 1.0 - share)  # a flag is above its own
    return keep


def cause_evidence_rows(
    batch, scored, detectors: dict[str, Detector], consensus: Consensus, ranks: dict
) -> pd.DataFrame:
    """`EVIDENCE_COLUMNS` rows: for each daylight frame some choice of the run's causes could
    flag (`flaggable`), its evidence per plain cause from the consensus's detectors of each
    cause of junk (`cause_evidence` over that cause's detectors), where it is above 0.
    `ranks`: `counted_ranks` of the run."""
    causes = [c for c in consensus.causes_ if cause_key(c) in scored.scores]
    if not causes:  # a consensus fitted before causes were recorded
        return pd.DataFrame(columns=list(EVIDENCE_COLUMNS))
    keep = flaggable({c: scored.scores[cause_key(c)] for c in causes}, consensus.contamination)
    if batch.daylight is not None:
        keep &= np.isin(np.asarray(batch.daylight, dtype=object), DAYLIGHT)
    else:
        keep[:] = False
    ids = np.asarray(batch.frame_ids, dtype=np.int64)
    parts = []
    for cause in causes:
        splits = {
            k: detectors[k].cause_split()
            for k in consensus.keys
            if k in detectors and detectors[k].cause == cause
        }
        if not splits:
            continue
        evidence = cause_evidence(ranks, splits, consensus.n_reference_)
        for plain in evidence.columns:
            values = evidence[plain].to_numpy(dtype=float)
            hit = keep & (values > 0)
            parts.append(
                pd.DataFrame(
                    {
                        "frame_id": ids[hit],
                        "cause": cause,
                        "plain_cause": str(plain),
                        "evidence": values[hit],
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=list(EVIDENCE_COLUMNS))
    return pd.concat(parts, ignore_index=True)
