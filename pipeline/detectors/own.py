"""The own-reference family: `soft`, `flat`, `exposure`, image quality against the camera's own
good frames under the same sun.

Under the same sun the same camera delivers the same sharpness, local contrast and exposure on
its clear days. So each frame is compared with its reference pool: the fit's frames taken with
the sun at a similar place in the sky (elevation within `elevation_tolerance` degrees, azimuth
within `azimuth_tolerance`), on ANY date; without the camera's place, the frames taken within
`hour_tolerance` hours of its time of day on a day when the sun was as far north or south
(its declination within `declination_tolerance` degrees, on any date: at one place, the clock
time and the sun's declination fix where the sun is, up to the clock's summer time); a frame
without a time, or whose pool holds fewer than `min_pool` frames, is compared with every
frame. The pool's upper
`reference_quantile` (its good frames) is the reference, so an episode of junk cannot become
the reference unless it fills more than a tenth of every pool it falls in: with pools over all
dates, a month of water on the lens shares each sun position with the other season that has
it (spring and autumn), and stays junk on its twentieth day as on its first. A density
detector (`lof`) calls such an episode normal: it is frequent.

- `soft`: log(1 + sharpness) below the reference (blur, water on the lens, fog, glare);
- `flat`: log(1 + local contrast) below the reference (haze, smoke, a wet film);
- `exposure`: mean luma away from the pool's median, either way (too dark, washed out); a frame
  brighter than its pool but under `WASHED_OUT_LUMA` ranks by its gap like any other, but is
  no evident harm (`ExposureDetector.evident`): a sunny hour among grey ones, or a veil of fog
  or smoke, which `flat` and `soft` measure.

`soft`'s reference is halfway between its pool's and the reference of all the fit's frames of
its daylight class (`class_weight` 0.5; day, twilight and night apart): what the camera
delivers with the sun there, and what it delivers at its best. A pool alone is what recurs at
that sun position, and on an archive of a few weeks what recurs there can be junk: the morning
sun glaring on the dome on every clear morning, a fog that comes every morning of a month, a
windowsill camera's dim hours. Its frames are then as soft as their pool and only the whole
day says they are soft. The pool keeps half the say, so the low sun's natural softness counts
for half (Kat Kam's frames with the sun under 10 degrees are about 0.37 as sharp as those over
45). Chosen on the development cameras (docs/PERFORMANCE.md, "`soft` against half its pool
and half the whole day"): growlab 0.942 -> 0.979, expressway 0.876 -> 0.891, roofcam 0.777 ->
0.791, where ranhados loses 0.006 and the renders at most 0.002. `flat` and `soft_cells` keep
their pool's reference alone: blended, `soft_cells` fell on the lamp-lit street (nyctraffic
0.855 -> 0.820) and `flat` cost a render 0.014 of AP.

A rank alone does not make a frame junk: every camera has a softest, flattest and darkest
frame, and on a camera with no poor frames at all (a sunny month in a yard) those are overcast
afternoons, a hair softer than the sunny ones. So the consensus counts a frame's rank only
where its gap to the reference is one a person would see (`evident`, parameter `min_gap`, in
the measure's own units, so the same for every camera): `soft` under about 0.6 of the
reference's sharpness (log gap 0.5), `flat` 30% less local contrast (0.35), `exposure` 20
grey levels of 255 from the pool's median. Chosen on the development cameras and renders
(docs/PERFORMANCE.md "Counting only harm a person would see": ranhados' consensus 0.63 ->
0.79, Kat Kam's 0.87 -> 0.88).

Scores are in units of one spread per measure: the median over the fit's frames of their
pool's reference minus its median. Pools are formed on a grid of sun-position bins (2 x 5
degrees; without a place, 20 minutes of the day x 2 degrees of declination), so the fit is
linear in frames; the bins'
quantiles are frozen at fit time, so `score-new` gives a fit frame its fit score and scores new
frames against the same references. Measured on the Kat Kam webcam and the renders in
docs/PERFORMANCE.md ("Real cameras"); the old one-sided checks (`blurry`, `haze`, ...) stay as
side-by-side detectors.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from pipeline.daylight import sun_declination
from pipeline.detectors.base import Detector, register
from pipeline.detectors.batch import CELL_STATS, FrameBatch, day_and_minute, daylight_classes

ELEVATION_BIN, AZIMUTH_BIN, MINUTE_BIN, DECLINATION_BIN = 2.0, 5.0, 20.0, 2.0
N_AZIMUTH_BINS = int(360 / AZIMUTH_BIN)
N_MINUTE_BINS = int(1440 / MINUTE_BIN)
# A frame darker than this (mean luma, of 255) is too dark to see, whatever its pool: a black
# frame is also the flattest and least sharp, and where the pool is as dark (a dim room at
# dawn) only `soft` and `flat` see it, so their evidence there is named "too dark", not fog.
DIM_LUMA = 40.0
# A frame brighter than its pool is washed out only when it is bright in absolute terms (the
# renders' washed-out frames: 180-240, Kat Kam's overexposed: 194); under this it is veiled,
# a milky haze or smoke over the scene (Kat Kam's smoke and fog: about 150, its normal 135),
# or only sunnier than the grey hours of its pool, and `exposure` counts no evidence for it.
WASHED_OUT_LUMA = 170.0
EVERY = ("all",)  # the pool of a frame without a time


class _OwnReferenceDetector(Detector):
    """One frame statistic (`column`, on a log scale when `log`) against the frame's own
    reference pool; `direction` 'below' scores a value under the reference, 'either' a value
    away from the pool's median either way."""

    cause = "quality"
    needs = frozenset({"frame_stats", "timestamps"})
    in_consensus = True
    unscorable = (
        "(the frames lack image statistics; re-ingest them, or run analyze once so "
        "that it fills in their local contrast)"
    )
    column: ClassVar[str]
    log: ClassVar[bool] = True
    direction: ClassVar[str] = "below"
    visible_gap: ClassVar[float]  # the default `min_gap`, in the measure's units
    example_bad: ClassVar[dict[str, float]]
    # the share of the reference that is the whole daylight class's (`_fit_pools`)
    class_weight: ClassVar[float] = 0.0
    format_version = 5

    def __init__(
        self,
        contamination: float = 0.05,
        reference_quantile: float = 0.9,
        elevation_tolerance: float = 8.0,
        azimuth_tolerance: float = 20.0,
        hour_tolerance: float = 1.0,
        declination_tolerance: float = 8.0,
        min_pool: int = 20,
        min_gap: float | None = None,
    ):
        self.contamination = contamination
        self.reference_quantile = reference_quantile
        self.elevation_tolerance = elevation_tolerance
        self.azimuth_tolerance = azimuth_tolerance
        self.hour_tolerance = hour_tolerance
        self.declination_tolerance = declination_tolerance
        self.min_pool = min_pool
        self.min_gap = min_gap  # None: the class's `visible_gap`

    def _upgrade(self, state: dict, version: int) -> dict:
        if version < 2:  # format 1 (before `min_gap`): the consensus counted every rank
            state = {"min_gap": float("-inf"), **state}
        # format 2 (before `dim_`): which fit frames were too dark to see was not kept;
        # format 3 (before `by_declination_`): without a place, pools were by time of day alone;
        # format 4 (before `class_weight_`): the reference was the pool's alone
        return {
            "dim_": None,
            "declination_tolerance": 8.0,
            "by_declination_": False,
            "class_weight_": 0.0,
            "class_reference_": {},
            **state,
        }

    def cause_split(self) -> dict[str, np.ndarray]:
        """Evidence on a fit frame darker than `DIM_LUMA` is "too dark" (a black frame is soft
        and flat because it is black); elsewhere it is the class's `plain_cause`. A run fitted
        before this was kept names every frame by the `plain_cause`."""
        n = len(self.decision_scores_)
        dim = np.zeros(n) if self.dim_ is None else self.dim_.astype(float)
        return {self.plain_cause: 1.0 - dim, "too dark": dim}

    def evident(self, scores: np.ndarray, batch: FrameBatch | None = None) -> np.ndarray:
        """Scores whose gap to the reference, in the measure's own units, is at least
        `min_gap` (the class's `visible_gap` when None)."""
        floor = self.visible_gap if self.min_gap is None else self.min_gap
        gaps = np.asarray(scores, dtype=float) * self.scale_
        return np.nan_to_num(gaps, nan=-np.inf) >= floor

    # --- the measure and the pools -------------------------------------------------------------

    def _values(self, batch: FrameBatch) -> np.ndarray:
        if self.column not in batch.stats:
            return np.full(len(batch), np.nan)
        x = batch.stats[self.column].to_numpy(float)
        return np.log1p(np.maximum(x, 0)) if self.log else x

    def _keys(self, batch: FrameBatch) -> list[tuple]:
        """Each frame's bin: ('sun', elevation bin, azimuth bin) when the sun's position is
        known, else ('time', 20-minute slot of the camera clock, declination bin of its date)
        (a run fitted before declination bins: ('time', slot)), else EVERY."""
        if self.by_sun_:
            elevation, azimuth = (
                batch.sun.T if batch.sun is not None else np.full((2, len(batch)), np.nan)
            )
            known = np.isfinite(elevation) & np.isfinite(azimuth)
            e = np.round(np.where(known, elevation, 0) / ELEVATION_BIN).astype(int)
            a = np.round(np.where(known, azimuth, 0) / AZIMUTH_BIN).astype(int) % N_AZIMUTH_BINS
            return [("sun", int(i), int(j)) if k else EVERY for i, j, k in zip(e, a, known)]
        _, minutes = day_and_minute(batch.local_time)
        known = np.isfinite(minutes)
        slots = np.floor(np.where(known, minutes, 0) / MINUTE_BIN).astype(int) % N_MINUTE_BINS
        if not self.by_declination_:
            return [("time", int(s)) if k else EVERY for s, k in zip(slots, known)]
        seasons = np.round(sun_declination(batch.local_time) / DECLINATION_BIN)
        seasons = np.where(known, seasons, 0).astype(int)
        return [("time", int(s), int(d)) if k else EVERY for s, d, k in zip(slots, seasons, known)]

    def _near(self, key: tuple) -> list[tuple]:
        """The bins whose frames are in the pool of a frame in bin `key`."""
        if key[0] == "sun":
            de = int(round(self.elevation_tolerance / ELEVATION_BIN))
            da = int(round(self.azimuth_tolerance / AZIMUTH_BIN))
            return [
                ("sun", key[1] + i, (key[2] + j) % N_AZIMUTH_BINS)
                for i in range(-de, de + 1)
                for j in range(-da, da + 1)
            ]
        if key[0] == "time":
            dt = int(round(self.hour_tolerance * 60 / MINUTE_BIN))
            if len(key) == 2:  # a run fitted before declination bins
                return [("time", (key[1] + i) % N_MINUTE_BINS) for i in range(-dt, dt + 1)]
            dd = int(round(self.declination_tolerance / DECLINATION_BIN))
            return [
                ("time", (key[1] + i) % N_MINUTE_BINS, key[2] + j)
                for i in range(-dt, dt + 1)
                for j in range(-dd, dd + 1)
            ]
        return [key]

    def _pool_quantiles(self, key: tuple) -> tuple[float, float]:
        """(median, reference) of the pool of bin `key`, from the fit's values."""
        if key in self.pool_quantiles_:
            return self.pool_quantiles_[key]
        if key == EVERY:
            return self.everything_
        members = [self.values_[b] for b in self._near(key) if b in self.values_]
        pool = np.concatenate(members) if members else np.empty(0)
        if len(pool) < self.min_pool:
            return self.everything_
        middle, reference = np.quantile(pool, [0.5, self.reference_quantile])
        return float(middle), float(reference)

    # --- fit and score -------------------------------------------------------------------------

    def _fit(self, batch: FrameBatch) -> None:
        self._choose_pools(batch)
        self._fit_pools(batch, self._values(batch), self._keys(batch), self.class_weight)

    def _choose_pools(self, batch: FrameBatch) -> None:
        """Pool by the sun's position where the batch has it, else by clock and declination
        (and check the settings the pools need)."""
        if not 0.5 <= self.reference_quantile < 1:
            raise ValueError(
                f"reference_quantile must be in [0.5, 1), got {self.reference_quantile}"
            )
        self.by_sun_ = batch.sun is not None and bool(np.isfinite(batch.sun).all(axis=1).any())
        self.by_declination_ = True

    def _fit_pools(
        self, batch: FrameBatch, x: np.ndarray, keys: list[tuple], class_weight: float = 0.0
    ) -> None:
        """Fit the pools on the fit frames' values `x` in their bins `keys`, and the reference
        of each daylight class, which makes `class_weight` of a frame's reference."""
        ok = np.isfinite(x)
        groups: dict[tuple, list[int]] = {}
        for i in np.flatnonzero(ok):
            groups.setdefault(keys[i], []).append(i)
        self.values_: dict[tuple, np.ndarray] = {k: np.sort(x[rows]) for k, rows in groups.items()}
        self.pool_quantiles_: dict[tuple, tuple[float, float]] = {}
        if ok.any():
            middle, reference = np.quantile(x[ok], [0.5, self.reference_quantile])
            self.everything_ = (float(middle), float(reference))
        else:
            self.everything_ = (np.nan, np.nan)
        self.pool_quantiles_ = {key: self._pool_quantiles(key) for key in self.values_}
        spreads = np.array(
            [
                self.pool_quantiles_[k][1] - self.pool_quantiles_[k][0]
                for k, good in zip(keys, ok)
                if good
            ]
        )
        spread = float(np.median(spreads)) if len(spreads) else np.nan
        self.scale_ = spread if np.isfinite(spread) and spread > 0 else 1.0
        luma = (
            batch.stats["mean_luma"].to_numpy(float)
            if "mean_luma" in batch.stats
            else np.full(len(batch), np.nan)
        )
        self.dim_ = luma < DIM_LUMA  # NaN (not measured): not dim
        self.class_weight_ = float(class_weight)
        self.class_reference_: dict[str, float] = {}
        if class_weight:
            classes = daylight_classes(batch)
            for c in dict.fromkeys(classes[ok]):
                member = x[ok & (classes == c)]
                self.class_reference_[str(c)] = float(np.quantile(member, self.reference_quantile))

    def _quantiles(self, keys: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(median, reference) of each frame's pool, for frames in bins `keys`."""
        found = {key: self._pool_quantiles(key) for key in dict.fromkeys(keys)}
        middle, reference = np.array([found[k] for k in keys], dtype=float).reshape(-1, 2).T
        return middle, reference

    def decision_function(self, batch: FrameBatch) -> np.ndarray:
        classes = daylight_classes(batch) if self.class_weight_ else None
        return self._scores(self._values(batch), self._keys(batch), classes)

    def _scores(
        self, x: np.ndarray, keys: list[tuple], classes: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of values `x` of frames in bins `keys` and daylight classes `classes` (needed
        where `class_weight_` is not 0)."""
        middle, reference = self._quantiles(keys)
        if self.direction == "below":
            return (self._blend(reference, classes) - x) / self.scale_
        return np.abs(x - middle) / self.scale_

    def _blend(self, reference: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
        """The pools' `reference` with `class_weight_` of each frame's daylight class's (the
        pool's alone for a class the fit did not have)."""
        if not self.class_weight_:
            return reference
        whole = pd.Series(classes, dtype=object).map(self.class_reference_).to_numpy(float)
        blended = (1 - self.class_weight_) * reference + self.class_weight_ * whole
        return np.where(np.isfinite(whole), blended, reference)


@register
class SoftDetector(_OwnReferenceDetector):
    key = "soft"
    summary = (
        "soft frame: sharper frames are the norm with the sun where it is and at the "
        "camera's best (blur, water on the lens, fog, glare)"
    )
    family = "detail"
    order = 5
    plain_cause = "blur"
    column = "sharpness"
    visible_gap = 0.5  # log(1 + sharpness): about 0.6 of the reference
    example_bad = {"sharpness": 2.0}
    class_weight = 0.5  # half the whole day's reference: see the module's docstring


@register
class FlatDetector(_OwnReferenceDetector):
    key = "flat"
    summary = (
        "flat frame: more local contrast is the norm with the sun where it is (haze, "
        "smoke, a wet film)"
    )
    family = "detail"
    order = 6
    plain_cause = "fog or haze"
    column = "local_contrast"
    visible_gap = 0.35  # log(1 + local contrast): 30% less than the reference
    example_bad = {"local_contrast": 0.5}


@register
class SoftCellsDetector(_OwnReferenceDetector):
    """`soft` on each cell of the view cut 3 x 3 (`sharpness_cells`), each cell against its
    own pool of the camera's frames with the sun where it is; a frame's score is its second
    softest cell, in that cell's own spreads. Water or dirt on part of the lens softens a few
    cells while the rest of the view (a busy street) keeps the whole frame's sharpness near its
    usual; each cell in its own spread, a street cell's traffic is its usual variation and a
    smear is not. The second cell, not the first: one cell alone is a parked truck or a sky
    without clouds more often than a smear. Evident from `min_gap` spreads (`visible_gap`)."""

    key = "soft_cells"
    summary = (
        "part of the view soft: a region sharper as a rule with the sun where it is (water or "
        "dirt on part of the lens)"
    )
    family = "detail"
    order = 6
    plain_cause = "blur"
    unscorable = (
        "(the frames lack their cells' sharpness; run analyze once so that it measures them "
        "from the stored thumbnails)"
    )
    visible_gap = 2.0  # spreads of the cell's own pool (the score's unit: `scale_` is 1)
    example_bad = {"sharpness_cell_0": 2.0, "sharpness_cell_3": 2.0}  # water down the left
    format_version = 1

    def _fit(self, batch: FrameBatch) -> None:
        self._choose_pools(batch)
        keys = self._keys(batch)  # every cell of a frame is in the frame's bin
        params = {k: v for k, v in self.get_params().items() if k != "min_gap"}
        self.cells_ = []
        for column in CELL_STATS:
            cell = SoftDetector(**params)
            cell.column = column
            cell.by_sun_, cell.by_declination_ = self.by_sun_, self.by_declination_
            cell._fit_pools(batch, cell._values(batch), keys)
            self.cells_.append(cell)
        self.scale_ = 1.0
        self.dim_ = self.cells_[0].dim_

    def decision_function(self, batch: FrameBatch) -> np.ndarray:
        keys = self._keys(batch)  # each cell against its pool alone (`class_weight_` 0)
        z = np.column_stack([cell._scores(cell._values(batch), keys) for cell in self.cells_])
        measured = np.isfinite(z)
        ranked = np.sort(np.where(measured, z, -np.inf), axis=1)
        return np.where(measured.sum(axis=1) >= 2, ranked[:, -2], np.nan)


@register
class ExposureDetector(_OwnReferenceDetector):
    key = "exposure"
    summary = "exposure unlike the camera's frames with the sun where it is (too dark, washed out)"
    family = "exposure"
    order = 7
    plain_cause = "too dark"
    column = "mean_luma"
    visible_gap = 20.0  # grey levels of 255 from the pool's median
    log = False
    direction = "either"
    # a one-sided check on a measure the sky moves too (Kat Kam: a fifth of its daylight frames
    # are 20 grey levels from their pool's median): only its top 3% counts
    evidence_from = 0.97
    example_bad = {"mean_luma": 4.0}

    format_version = 7

    def _fit_pools(
        self, batch: FrameBatch, luma: np.ndarray, keys: list[tuple], class_weight: float = 0.0
    ) -> None:
        super()._fit_pools(batch, luma, keys, class_weight)
        self.brighter_, self.veiled_ = self._sides(luma, keys)  # of the fit frames
        self.veils_count_ = False

    def _sides(self, luma: np.ndarray, keys: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(brighter than the pool's median, and of those not bright in absolute terms) for
        frames of mean luma `luma` in bins `keys`."""
        brighter = luma > self._quantiles(keys)[0]  # NaN (not measured): not brighter
        return brighter, brighter & (luma < WASHED_OUT_LUMA)

    def evident(self, scores: np.ndarray, batch: FrameBatch | None = None) -> np.ndarray:
        """A gap of `min_gap` grey levels from the pool's median, darker or washed out: a frame
        brighter than its pool but under `WASHED_OUT_LUMA` shows no exposure harm (a sunny
        hour against grey ones, or a veil of fog or smoke, which `flat` and `soft` measure).
        The veil is told by the brightness of the frames of `batch`, which these scores score
        (needed unless the run was fitted when veils counted: `veils_count_`)."""
        seen = super().evident(scores)
        if self.veils_count_:
            return seen
        if batch is None:
            raise ValueError("exposure tells a veil by the frames' brightness: pass their batch")
        luma = self._values(batch)
        return seen & ~self._sides(luma, self._keys(batch))[1]

    def _upgrade(self, state: dict, version: int) -> dict:
        state = super()._upgrade(state, version)  # format 5: before `class_weight_`
        # format 3 (before `veiled_`): every brighter frame was "too bright"; format 6 (before
        # `veils_count_`): a veiled frame's gap counted as evidence
        return {"veiled_": None, "veils_count_": True, **state}

    def cause_split(self) -> dict[str, np.ndarray]:
        """A fit frame darker than its pool's median is "too dark"; a brighter one "too
        bright" when it is bright in absolute terms (`WASHED_OUT_LUMA`), else "fog or haze"
        (a veil over the scene lifts its brightness without washing it out; such a frame
        brings evidence only in a run fitted when veils counted, `veils_count_`)."""
        brighter = self.brighter_.astype(float)
        veiled = np.zeros_like(brighter) if self.veiled_ is None else self.veiled_.astype(float)
        return {"too dark": 1.0 - brighter, "too bright": brighter - veiled, "fog or haze": veiled}
