"""The detector registry and the base classes of every detector and of the consensus.

What the rest of the code needs to know about a detector is a class attribute of it, and
everything else derives from the registry (`DETECTORS`): the default lists in
`pipeline.settings` (`on_by_default`, `in_consensus`), what analyze says when a detector could
not score (`unscorable`), where consensus starts counting its ranks as evidence
(`evidence_from`) and from what size of harm (`evident`), how many neighbours the shared index
must attach (`n_neighbors_needed`), and the facts each run records for the dashboard
(`Scorer.facts`: its `summary`, evidence `family`, `order` in lists, `cause` and
`plain_cause`; the dashboard never imports the pipeline, so it reads them from the run). A
fact shared by a family is set once on the family's base class.

Each detector carries two names for what it sees. `cause` is the kind of junk
(`pipeline.causes`: quality, camera, scene, rarity): the consensus scores each cause from its
detectors and sums the causes the user counts as junk (setting `junk_causes`). `plain_cause`
names what a high score means in words a camera owner uses (one of `PLAIN_CAUSES`: "too dark",
"fog or haze", "camera moved", "something in the scene", "unusual" for the detectors that only
say a frame is rare, ...): an incident is named after the plain cause that carries most of its
evidence (`pipeline.incidents`). Every plain cause belongs to one cause (`PLAIN_CAUSE_OF`).
`cause_split` says how a detector's evidence on the fit's frames divides among plain causes
when one detector sees more than one (`exposure`: too dark or too bright; the background
detector of runs fitted before the camera cause had its own detector: its alignment part is
"camera moved").

Every detector follows the PyOD / scikit-learn habits: `__init__` only stores keyword
parameters, `fit(batch)` does the work and returns self, learned state ends in `_`, and
`decision_function(batch)` scores frames against the frozen fit; higher = more abnormal. The
threshold, the fit's flags and the percentile ranks come from one place for every detector and
the consensus (`Scorer._process_decision_scores`, as PyOD's base class does).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from pipeline.causes import CAUSES
from pipeline.detectors.batch import FrameBatch
from pipeline.versioned import Versioned
from store.causes import PLAIN_CAUSES

# What a detector can need to run, beyond the frames themselves.
NEEDS = {
    "embeddings": "the run's PCA space of the embedding vectors",
    "regions": "each region's own PCA space, for a model whose vectors describe regions of "
    "the view (pipeline.projection)",
    "timestamps": "each frame's time (order in time, time of day, date)",
    "thumbnails": "the stored thumbnails' pixels",
    "frame_stats": "the image statistics ingest computed (mean luma, contrast, ...)",
}

DETECTORS: dict[str, type["Detector"]] = {}

# What a detector's high score means, in a camera owner's words (`plain_cause`): the names
# and their order live with the store (`store.causes.PLAIN_CAUSES`), which names a recombined
# consensus's incidents by the same rule. The order breaks near-ties of an incident's evidence
# (`pipeline.incidents`) where one cause brings another's signs with it: a black frame is also
# flat and unsharp ("too dark" before "fog or haze" and "blur"), fog is also bright and
# unsharp ("fog or haze" before "too bright" and "blur"); a camera or scene cause comes after
# them, "unusual" (a detector that knows a frame is rare, not why) last.
# The cause of junk (`pipeline.causes`) each plain cause belongs to: a detector's plain cause
# is one of its cause's.
PLAIN_CAUSE_OF = {
    "too dark": "quality",
    "fog or haze": "quality",
    "too bright": "quality",
    "blur": "quality",
    "camera moved": "camera",
    "something in the scene": "scene",
    "unusual": "rarity",
}


class Scorer(Versioned, BaseEstimator):
    """What detectors and the consensus share: their facts, and a threshold and percentile ranks
    learned from the fit's scores (`decision_scores_`)."""

    key: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line: what a high score means
    family: ClassVar[str] = ""  # evidence family: consensus averages within, sums across
    order: ClassVar[int] = 1000  # place in the dashboard's lists (then by key)
    cause: ClassVar[str] = ""  # the kind of junk it sees: a key of pipeline.causes.CAUSES
    plain_cause: ClassVar[str] = ""  # what a high score means, in a camera owner's words
    recorded: ClassVar[tuple[str, ...]] = ("summary", "family", "order", "cause", "plain_cause")

    def __init__(self, contamination: float = 0.05):
        self.contamination = contamination

    @classmethod
    def facts(cls) -> dict[str, Any]:
        """The facts a run records about it (in `analysis_runs.params`, for the dashboard)."""
        return {name: getattr(cls, name) for name in cls.recorded}

    def _check_contamination(self) -> None:
        if not 0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {self.contamination}")

    def _process_decision_scores(self) -> None:
        """From the fit's scores (`decision_scores_`): their sorted finite values
        (`reference_`, what percentiles rank against), the `threshold_` above which a share
        `contamination` of them lie, and the fit's flags (`labels_`)."""
        scores = self.decision_scores_
        finite = scores[np.isfinite(scores)]
        self.reference_ = np.sort(finite)
        self.threshold_ = (
            float(np.quantile(finite, 1 - self.contamination)) if len(finite) else np.inf
        )
        self.labels_ = self.predict_scores(scores)

    def percentile(self, scores: np.ndarray, lowest_ties: bool = True) -> np.ndarray:
        """Share of fit frames scoring <= each score (0..1); NaN stays NaN.

        With `lowest_ties`, a score tied at the fit's lowest is its "nothing seen" (a frame
        that lines up with the camera's view, an exposure at its pool's median) and ranks as
        the lowest fit frame, 1 / n, not as the top of the tied block: `alignment` on a still
        camera scores most frames 0, and those frames were at its 95th percentile or above,
        brought the consensus the most evidence there is and passed a reader's "percentile
        >= 90" filter. A score that is not tied at the lowest ranks as before. (A run fitted
        before this keeps the block's rank: `Consensus.lowest_ties_`.)"""
        out = np.full(len(scores), np.nan)
        ok = np.isfinite(scores)
        reference = self.reference_
        if len(reference):
            ranks = np.searchsorted(reference, scores[ok], side="right")
            if lowest_ties:
                ranks = np.where(scores[ok] <= reference[0], np.minimum(ranks, 1), ranks)
            out[ok] = ranks / len(reference)
        return out

    def predict_scores(self, scores: np.ndarray) -> np.ndarray:
        """Whether each score is above the fit's threshold (NaN: no)."""
        return np.nan_to_num(scores, nan=-np.inf) > self.threshold_


class Detector(Scorer):
    """A detector of outlying frames in a `FrameBatch`; subclasses set the facts, `_fit` and
    `decision_function`."""

    needs: ClassVar[frozenset[str]] = frozenset()  # keys of NEEDS
    on_by_default: ClassVar[bool] = True  # in the default `detectors` setting
    in_consensus: ClassVar[bool] = False  # in the default `consensus_detectors` setting
    evidence_from: ClassVar[float] = 0.0  # consensus counts ranks above this as evidence
    unscorable: ClassVar[str] = ""  # why it may score nothing ({param} filled in)
    n_neighbors_needed: ClassVar[int] = 0  # neighbours the batch must have attached
    uses_batch_frames: ClassVar[bool] = False  # a new frame's score depends on the other new
    #                                            frames scored with it (its context in time)

    def fit(self, batch: FrameBatch) -> "Detector":
        self._check_contamination()
        scored = self._fit(batch)  # a fit that scored every frame as it learned returns them
        self.decision_scores_ = self.decision_function(batch) if scored is None else scored
        self._process_decision_scores()
        return self

    def cause_split(self) -> dict[str, np.ndarray]:
        """How this detector's evidence on each fit frame divides among plain causes: cause ->
        share per fit frame (the shares of a frame sum to 1). By default all of it is the
        class's `plain_cause`."""
        return {self.plain_cause: np.ones(len(self.decision_scores_))}

    def evident(self, scores: np.ndarray, batch: FrameBatch | None = None) -> np.ndarray:
        """Which of these scores, of the frames of `batch` (the frames they score, for a
        detector that looks at them), show harm a person would see (bool per score). The
        consensus counts a frame's rank as evidence only where they do
        (`consensus.counted_ranks`): a check measured in the image's own units (`soft`, `flat`,
        `exposure`) says its top ranks are no harm on a camera whose worst frames are only a
        little off. By default every score does."""
        return np.ones(len(scores), dtype=bool)

    def why_unscorable(self) -> str:
        """What the frames lack when this detector scored none of them."""
        return self.unscorable.format(**self.get_params())

    def _fit(self, batch: FrameBatch) -> np.ndarray | None:  # pragma: no cover - abstract
        """Learn from the fit frames; return their scores where learning gave them (else None:
        `fit` scores them with `decision_function`)."""
        raise NotImplementedError

    def decision_function(self, batch: FrameBatch) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a detector class to the registry under its `key`."""
    if not cls.key or not cls.family or not cls.summary:
        raise ValueError(f"{cls.__name__} needs a key, a family and a summary to be registered")
    if cls.cause not in CAUSES:
        raise ValueError(
            f"{cls.__name__} needs a cause, one of {', '.join(CAUSES)}; it has {cls.cause!r}"
        )
    if cls.plain_cause not in PLAIN_CAUSES:
        raise ValueError(
            f"{cls.key}'s plain_cause {cls.plain_cause!r} is not one of {', '.join(PLAIN_CAUSES)}"
        )
    if PLAIN_CAUSE_OF[cls.plain_cause] != cls.cause:
        raise ValueError(f"{cls.key}'s plain_cause {cls.plain_cause!r} is not a {cls.cause} cause")
    if cls.key in DETECTORS:
        raise ValueError(f"detector {cls.key!r} registered twice")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise ValueError(
            f"{cls.key} needs {', '.join(sorted(unknown))}: not one of {', '.join(NEEDS)}"
        )
    DETECTORS[cls.key] = cls
    return cls


def make_detector(
    key: str, contamination: float = 0.05, random_state: int = 0, index_kind: str = "auto"
) -> Detector:
    """A new unfitted detector from its registry key; `random_state` and `index_kind` (the
    kind of neighbour index, setting `neighbor_index`) go to the detectors that take them."""
    try:
        cls = DETECTORS[key]
    except KeyError:
        raise KeyError(f"unknown detector {key!r}; known: {', '.join(DETECTORS)}") from None
    params = {"contamination": contamination}
    names = cls._get_param_names()
    if "random_state" in names:
        params["random_state"] = random_state
    if "index_kind" in names:  # a detector with neighbour indexes of its own (`regions`)
        params["index_kind"] = index_kind
    return cls(**params)


def default_detectors() -> list[str]:
    """The detectors a run runs by default, in registry order."""
    return [key for key, cls in DETECTORS.items() if cls.on_by_default]


def default_consensus() -> list[str]:
    """The detectors the consensus combines by default, in registry order."""
    return [key for key, cls in DETECTORS.items() if cls.in_consensus]
