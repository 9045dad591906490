"""The one-sided image checks: `dark`, `overexposed`, `blurry`, `low_information`, `haze`.

Each is a fixed formula of the frame statistics ingest computed from the thumbnail (mean luma,
contrast, sharpness, colourfulness), the same for every camera and every hour; only the
distribution of the fit's scores is learned, to rank and flag frames. They belong to the
quality cause but are side-by-side detectors, out of the default consensus: the own-reference
checks (`pipeline.detectors.own`: `soft`, `flat`, `exposure`) judge the same things against
what this camera delivers under the same sun, and on a real webcam the mean of these
one-sided checks let `dark` and `overexposed`, which know nothing of water or fog, dilute
`blurry` (docs/PERFORMANCE.md, "Real cameras").
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from pipeline.detectors.base import Detector, register


class _QualityDetector(Detector):
    """A fixed formula of the frame statistics; only the reference distribution is learned.

    `example_bad` is the statistics of a frame the check flags among ordinary ones (mean luma
    90-140, contrast 35-50, sharpness 200-400, colourfulness 20-40): the contract tests plant
    them."""

    family = "quality"
    cause = "quality"
    needs = frozenset({"frame_stats"})
    order = 100
    unscorable = "(the frames lack image statistics; re-ingest them)"
    formula: ClassVar[Callable[[pd.DataFrame], np.ndarray]]
    example_bad: ClassVar[dict[str, float]]

    def _fit(self, batch):
        pass

    def decision_function(self, batch):
        return np.asarray(type(self).formula(batch.stats), dtype=float)


def _log(x):
    return np.log1p(np.maximum(np.asarray(x, dtype=float), 0))


@register
class DarkDetector(_QualityDetector):
    key = "dark"
    plain_cause = "too dark"
    summary = "dark frame: low mean luma"
    example_bad = {"mean_luma": 4.0}
    formula = staticmethod(lambda s: 1 - s["mean_luma"].to_numpy(float) / 255)


@register
class OverexposedDetector(_QualityDetector):
    key = "overexposed"
    plain_cause = "too bright"
    summary = "washed-out frame: bright with little contrast"
    example_bad = {"mean_luma": 250.0, "contrast": 3.0}
    formula = staticmethod(
        lambda s: s["mean_luma"].to_numpy(float) / 255 - s["contrast"].to_numpy(float) / 64
    )


@register
class BlurryDetector(_QualityDetector):
    key = "blurry"
    plain_cause = "blur"
    summary = "blurry frame: low variance of the Laplacian"
    example_bad = {"sharpness": 2.0}
    formula = staticmethod(lambda s: -_log(s["sharpness"]))


@register
class LowInformationDetector(_QualityDetector):
    key = "low_information"
    plain_cause = "fog or haze"
    summary = "little to see: low contrast and low colourfulness"
    example_bad = {"contrast": 2.0, "colorfulness": 0.5}
    formula = staticmethod(lambda s: -(_log(s["contrast"]) + 0.5 * _log(s["colorfulness"])))


@register
class HazeDetector(_QualityDetector):
    key = "haze"
    plain_cause = "fog or haze"
    summary = "haze or fog: not dark, yet flat and colourless"
    example_bad = {"mean_luma": 170.0, "contrast": 6.0, "colorfulness": 1.0}
    formula = staticmethod(
        lambda s: (
            np.minimum(s["mean_luma"].to_numpy(float), 120) / 120
            - _log(s["contrast"]) / np.log(65)
            - _log(s["colorfulness"]) / np.log(65)
        )
    )
