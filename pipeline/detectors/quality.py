"""The image-quality family: `dark`, `overexposed`, `blurry`, `low_information`, `haze`.

Each is a fixed formula of the frame statistics ingest computed from the thumbnail (mean luma,
contrast, sharpness, colourfulness); only the distribution of the fit's scores is learned, to
rank and flag frames.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from pipeline.detectors.base import Detector, register


class _QualityDetector(Detector):
    """A fixed formula of the frame statistics; only the reference distribution is learned."""

    formula: ClassVar[Callable[[pd.DataFrame], np.ndarray]]

    def _fit(self, batch):
        pass

    def decision_function(self, batch):
        return np.asarray(type(self).formula(batch.stats), dtype=float)


def _log(x):
    return np.log1p(np.maximum(np.asarray(x, dtype=float), 0))


@register
class DarkDetector(_QualityDetector):
    key = "dark"
    family = "quality"
    summary = "dark frame: low mean luma"
    formula = staticmethod(lambda s: 1 - s["mean_luma"].to_numpy(float) / 255)


@register
class OverexposedDetector(_QualityDetector):
    key = "overexposed"
    family = "quality"
    summary = "washed-out frame: bright with little contrast"
    formula = staticmethod(lambda s: s["mean_luma"].to_numpy(float) / 255
                           - s["contrast"].to_numpy(float) / 64)


@register
class BlurryDetector(_QualityDetector):
    key = "blurry"
    family = "quality"
    summary = "blurry frame: low variance of the Laplacian"
    formula = staticmethod(lambda s: -_log(s["sharpness"]))


@register
class LowInformationDetector(_QualityDetector):
    key = "low_information"
    family = "quality"
    summary = "little to see: low contrast and low colourfulness"
    formula = staticmethod(lambda s: -(_log(s["contrast"]) + 0.5 * _log(s["colorfulness"])))


@register
class HazeDetector(_QualityDetector):
    key = "haze"
    family = "quality"
    summary = "haze or fog: not dark, yet flat and colourless"
    formula = staticmethod(lambda s: np.minimum(s["mean_luma"].to_numpy(float), 120) / 120
                           - _log(s["contrast"]) / np.log(65) - _log(s["colorfulness"]) / np.log(65))
