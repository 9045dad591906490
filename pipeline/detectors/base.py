"""The detector registry and the base class every detector derives from.

Every detector follows the PyOD / scikit-learn habits: `__init__` only stores keyword
parameters, `fit(batch)` does the work and returns self, learned state ends in `_`
(`decision_scores_`, `threshold_`, `labels_`, `reference_`), and `decision_function(batch)`
scores frames against the frozen fit; higher = more abnormal.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from pipeline.detectors.batch import FrameBatch

DETECTORS: dict[str, type["Detector"]] = {}


class Detector(BaseEstimator):
    """Shared behaviour: scores of the fit, percentile ranks against them, the threshold."""

    key: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    n_neighbors_needed: ClassVar[int] = 0

    def __init__(self, contamination: float = 0.05):
        self.contamination = contamination

    def fit(self, batch: FrameBatch) -> "Detector":
        self._check_contamination()
        self._fit(batch)
        scores = self.decision_function(batch)
        self._set_reference(scores)
        return self

    def _check_contamination(self) -> None:
        if not 0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {self.contamination}")

    def _set_reference(self, scores: np.ndarray) -> None:
        self.decision_scores_ = scores
        finite = scores[np.isfinite(scores)]
        self.reference_ = np.sort(finite)
        self.threshold_ = (float(np.quantile(finite, 1 - self.contamination))
                           if len(finite) else np.inf)
        self.labels_ = self.predict_scores(scores)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Share of fit frames scoring <= each score (0..1); NaN stays NaN."""
        out = np.full(len(scores), np.nan)
        ok = np.isfinite(scores)
        if len(self.reference_):
            out[ok] = np.searchsorted(self.reference_, scores[ok], side="right") / len(self.reference_)
        return out

    def predict_scores(self, scores: np.ndarray) -> np.ndarray:
        return np.nan_to_num(scores, nan=-np.inf) > self.threshold_

    def _fit(self, batch: FrameBatch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def decision_function(self, batch: FrameBatch) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def register(cls: type["Detector"]) -> type["Detector"]:
    """Class decorator: add a detector class to the registry under its `key`."""
    if cls.key in DETECTORS:
        raise ValueError(f"detector {cls.key!r} registered twice")
    DETECTORS[cls.key] = cls
    return cls


def make_detector(key: str, contamination: float = 0.05, random_state: int = 0) -> "Detector":
    """A new unfitted detector from its registry key."""
    try:
        cls = DETECTORS[key]
    except KeyError:
        raise KeyError(f"unknown detector {key!r}; known: {', '.join(DETECTORS)}") from None
    params = {"contamination": contamination}
    if "random_state" in cls._get_param_names():
        params["random_state"] = random_state
    return cls(**params)
