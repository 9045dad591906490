"""Quality against the camera's own good frames: junk that lasts (a week of streaks, a month of
haze) stays junk, where a density detector calls a frequent look normal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.detectors import FrameBatch, make_detector
from pipeline.detectors.own import SoftDetector
from pipeline.neighbors import NeighborIndex

LAT, LON = 49.28, -123.16
N_DAYS, HOURS = 120, np.arange(8, 18)  # hourly daylight frames over four months


def _sharp_light(light):
    """How sharp a frame is in light `light` (0..1 of the brightest) relative to the sharpest:
    as Kat Kam's, whose frames with the sun under 10 degrees are about 0.37 as sharp as those
    with it over 45 (the camera's exposure makes up for most of the light)."""
    return 0.35 + 0.65 * light


def _clock() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day number, camera-clock time, the sun's daily arc 0..1) of four months of hourly
    daylight frames."""
    days = np.repeat(np.arange(N_DAYS), len(HOURS))
    hours = np.tile(HOURS, N_DAYS).astype(float)
    local = (
        np.datetime64("2024-03-01T00:00")
        + days * np.timedelta64(1, "D")
        + (hours * 60).astype(int) * np.timedelta64(1, "m")
    )
    return days, local, np.sin(np.pi * (hours - 6) / 12)


def _frames(local: np.ndarray, **stats) -> pd.DataFrame:
    """Daylight frame rows at camera-clock times `local` in Vancouver, with these statistics
    (colorfulness 20 unless given)."""
    return pd.DataFrame(
        {
            "frame_id": np.arange(len(local)) + 1,
            "taken_at": local,
            "taken_at_utc": pd.to_datetime(local)
            .tz_localize("America/Vancouver")
            .tz_convert("UTC"),
            "daylight": "day",
            "colorfulness": 20.0,
            **stats,
        }
    )


def _series(
    episode: slice,
    measure: str,
    factor: float,
    seed: int = 0,
    place: bool = True,
    clearest: float = 0.7,
) -> tuple[FrameBatch, np.ndarray]:
    """Four months of hourly daylight frames whose sharpness and local contrast follow the sun
    (softer in the low morning and evening light; sharpness by `_sharp_light`) and the weather
    (grey days, down to `clearest` ** 2 of a clear day's sharpness; 0.97: a steady sunny
    season), with the frames of `episode` degraded: `measure` multiplied by `factor`. Returns the batch (its PCA
    space is the frames' log measures, so an episode is a dense cluster) and the episode mask."""
    rng = np.random.default_rng(seed)
    days, local, light = _clock()
    grey = np.repeat(rng.uniform(clearest, 1.0, N_DAYS) ** 2, len(HOURS))  # clear to overcast
    sharpness = 400 * _sharp_light(light) * grey * rng.lognormal(0, 0.1, len(days))
    contrast = 14 * np.sqrt(light * grey) * rng.lognormal(0, 0.05, len(days))
    luma = 60 + 80 * light * rng.lognormal(0, 0.05, len(days))
    junk = np.zeros(len(days), bool)
    junk[episode] = True
    stats = {"sharpness": sharpness, "local_contrast": contrast}
    stats[measure] = np.where(junk, stats[measure] * factor, stats[measure])
    frames = _frames(
        local,
        mean_luma=luma,
        contrast=contrast * 3,
        sharpness=stats["sharpness"],
        local_contrast=stats["local_contrast"],
    )
    z = np.column_stack(
        [np.log(stats["sharpness"]), np.log(stats["local_contrast"]), np.log(luma)]
    ).astype(np.float32)
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    batch = FrameBatch.from_frames(
        frames["frame_id"].to_numpy(),
        z,
        frames,
        lat=LAT if place else None,
        lon=LON if place else None,
    )
    NeighborIndex().fit(batch.z, batch.frame_ids).attach(batch, 20)
    return batch, junk


def _auc(key: str, batch: FrameBatch, junk: np.ndarray) -> float:
    scores = make_detector(key).fit(batch).decision_scores_
    return roc_auc_score(junk, np.nan_to_num(scores, nan=np.nanmedian(scores)))


N = N_DAYS * len(HOURS)


@pytest.mark.parametrize("place", [True, False])
def test_a_week_of_streaks_in_a_tenth_of_the_archive_stays_junk(place):
    """Water streaks soften twelve days in a row (10% of the frames): every one of them is
    below what the camera delivers under the same sun on its clear days; `lof` finds the
    episode's frames among their own kind and calls them normal."""
    block = slice(N // 2, N // 2 + N // 10)
    batch, junk = _series(block, "sharpness", 0.35, place=place)
    assert _auc("soft", batch, junk) > 0.95
    assert _auc("lof", batch, junk) < 0.75


def test_a_month_of_haze_stays_junk_on_its_last_day():
    """Smoke flattens a month (a quarter of the frames): the reference is the upper tenth of
    every pool over all dates, so the last day of the month is as flat against it as the
    first."""
    block = slice(N // 4, N // 4 + N // 4)
    batch, junk = _series(block, "local_contrast", 0.6, seed=1)
    det = make_detector("flat").fit(batch)
    scores = det.decision_scores_
    assert roc_auc_score(junk, scores) > 0.95
    first, last = np.flatnonzero(junk)[: len(HOURS)], np.flatnonzero(junk)[-len(HOURS) :]
    normal = np.quantile(scores[~junk], 0.9)
    assert (scores[first] > normal).mean() > 0.8 and (scores[last] > normal).mean() > 0.8
    assert _auc("lof", batch, junk) < 0.75


def _sunny_month_with_morning_glare(clear_share: float) -> tuple[FrameBatch, np.ndarray]:
    """A June month of hourly frames from 06:00 to 19:00 in Vancouver whose low morning sun
    (06:00 to 08:00, 6 to 25 degrees up) glares on the dome of every clear morning, veiling
    the view (sharpness x 0.3); about `clear_share` of the days are clear (the rest overcast, a
    little softer and without glare). Returns the batch and the glare mask."""
    from pipeline.daylight import sun_position

    rng = np.random.default_rng(4)
    n_days, hours = 30, np.arange(6, 20)
    days, clock = np.repeat(np.arange(n_days), len(hours)), np.tile(hours, n_days)
    local = np.datetime64("2024-06-01T00:00") + days * np.timedelta64(1, "D")
    local = local + clock * np.timedelta64(1, "h")
    utc = pd.DatetimeIndex(local).tz_localize("America/Vancouver").tz_convert("UTC")
    elevation, _ = sun_position(utc.tz_localize(None), LAT, LON)
    clear = np.repeat(rng.random(n_days) < clear_share, len(hours))
    glare = clear & np.isin(clock, [6, 7, 8])
    sharpness = 400 * _sharp_light(np.clip(elevation, 0, 60) / 60) * np.where(clear, 1, 0.75)
    sharpness *= rng.lognormal(0, 0.1, len(days)) * np.where(glare, 0.3, 1)
    frames = _frames(
        local, mean_luma=120.0, contrast=40.0, sharpness=sharpness, local_contrast=10.0
    )
    ids = frames["frame_id"].to_numpy()
    batch = FrameBatch.from_frames(
        ids, np.zeros((len(ids), 0), np.float32), frames, lat=LAT, lon=LON
    )
    return batch, glare


def test_glare_on_every_clear_morning_is_soft_against_the_whole_day():
    """A sunny month's every morning is veiled by the sun on the dome, so the pool of those sun
    positions holds nothing else and alone calls them normal (the pool's reference is a glared
    frame). Half the reference is the whole day's: every glared frame is evident and ranked
    above the rest. With a few overcast mornings among them the pool alone sees it too."""
    batch, glare = _sunny_month_with_morning_glare(clear_share=1.0)
    assert glare.mean() > 0.2
    soft = make_detector("soft").fit(batch)
    assert soft.class_weight_ == 0.5
    scores = soft.decision_scores_
    assert roc_auc_score(glare, scores) > 0.99
    assert soft.evident(scores)[glare].all() and soft.evident(scores)[~glare].mean() < 0.05
    pool_alone = make_detector("soft")
    pool_alone.class_weight = 0.0
    pool_alone.fit(batch)
    assert not pool_alone.evident(pool_alone.decision_scores_)[glare].any()

    batch, glare = _sunny_month_with_morning_glare(clear_share=0.7)
    assert roc_auc_score(glare, pool_alone.fit(batch).decision_scores_) > 0.99


def test_soft_scores_new_frames_against_the_blend_it_was_fitted_with():
    """`score-new` gives a fit frame its fit score; a frame of a daylight class the fit did not
    have is compared with its pool alone; a run fitted before the whole day's reference
    (format 4) keeps the pool's alone and scores its fit as it did."""
    batch, _ = _sunny_month_with_morning_glare(clear_share=1.0)
    soft = make_detector("soft").fit(batch)
    np.testing.assert_allclose(soft.decision_function(batch), soft.decision_scores_)
    assert set(soft.class_reference_) == {"day"}
    unknown = FrameBatch(**{**batch.__dict__, "daylight": None})
    pool_alone = make_detector("soft")
    pool_alone.class_weight = 0.0
    pool_alone.fit(batch)
    np.testing.assert_allclose(soft.decision_function(unknown), pool_alone.decision_scores_)

    state = {
        k: v
        for k, v in pool_alone.__getstate__().items()
        if k not in ("class_weight_", "class_reference_")
    }
    old = SoftDetector.__new__(SoftDetector)
    old.__setstate__({**state, "_format": 4})
    assert old.class_weight_ == 0.0
    np.testing.assert_allclose(old.decision_function(batch), pool_alone.decision_scores_)


def test_exposure_scores_either_way_and_new_frames_like_the_fit():
    batch, _ = _series(slice(0, 0), "sharpness", 1.0)
    det = make_detector("exposure").fit(batch)
    np.testing.assert_allclose(det.decision_function(batch), det.decision_scores_)
    stats = batch.stats.copy()
    stats.loc[5, "mean_luma"], stats.loc[6, "mean_luma"] = 5.0, 250.0
    odd = det.decision_function(FrameBatch(**{**batch.__dict__, "stats": stats}))
    assert min(odd[5], odd[6]) > np.quantile(det.decision_scores_, 0.99)


def _exposure_cases(batch: FrameBatch) -> tuple[FrameBatch, dict[str, np.ndarray]]:
    """`batch` with frames made darker than their hour (40 grey levels), washed out (235)
    and brighter than their hour but not bright (30 levels up, staying under
    `WASHED_OUT_LUMA`: a sunny hour among grey ones, or a veil of smoke), ten of each."""
    from pipeline.detectors.own import WASHED_OUT_LUMA

    stats = batch.stats.copy()
    luma = stats["mean_luma"].to_numpy()
    rows = np.arange(len(luma))
    can_veil = rows[(luma + 30 < WASHED_OUT_LUMA - 5) & (luma > 60)]
    cases = {
        "darker": rows[100:1100:100],
        "washed": rows[150:1150:100],
        "veiled": can_veil[3::97][:10],
    }
    stats.loc[cases["darker"], "mean_luma"] = luma[cases["darker"]] - 40
    stats.loc[cases["washed"], "mean_luma"] = 235.0
    stats.loc[cases["veiled"], "mean_luma"] = luma[cases["veiled"]] + 30
    masks = {k: np.isin(rows, v) for k, v in cases.items()}
    return FrameBatch(**{**batch.__dict__, "stats": stats}), masks


def test_exposure_counts_a_darker_or_washed_out_frame_not_a_brighter_one_under_washed_out():
    """A frame 30 grey levels brighter than its pool's median but under `WASHED_OUT_LUMA` is
    no exposure fault: a sunny hour among grey ones, or a veil of fog or smoke, which `flat`
    and `soft` measure. It still ranks high (its gap is as large), but brings the consensus
    no evidence; a darker frame and a washed-out one do, in the fit and in new frames."""
    from pipeline.detectors import counted_ranks

    plain, _ = _series(slice(0, 0), "sharpness", 1.0)
    batch, case = _exposure_cases(plain)
    det = make_detector("exposure").fit(batch)
    scores = det.decision_scores_
    gap = scores * det.scale_
    assert (gap[case["veiled"]] >= det.visible_gap).all()  # as far off as the others ...
    evident = det.evident(scores, batch)
    assert evident[case["darker"]].all() and evident[case["washed"]].all()
    assert not evident[case["veiled"]].any()  # ... but no harm
    np.testing.assert_array_equal(det.veiled_, det._sides(det._values(batch), det._keys(batch))[1])
    pcts = {"exposure": det.percentile(scores)}
    counted = counted_ranks({"exposure": det}, {"exposure": scores}, pcts, batch)["exposure"]
    assert (counted[case["veiled"]] == 0).all() and (counted[case["darker"]] > 0.9).all()

    # new frames: the veil is told by their own brightness against the frozen pools
    new, new_case = _exposure_cases(plain)
    new_scores = det.decision_function(new)
    seen = det.evident(new_scores, new)
    assert seen[new_case["darker"]].all() and seen[new_case["washed"]].all()
    assert not seen[new_case["veiled"]].any()
    with pytest.raises(ValueError, match="brightness"):
        det.evident(new_scores)


def test_a_run_fitted_when_veils_counted_still_counts_them():
    """An `exposure` pickled before `veils_count_` (format 6) counts a veiled frame's gap as
    it did, with or without the frames, so a stored run scores new frames as its fit."""
    plain, _ = _series(slice(0, 0), "sharpness", 1.0)
    batch, case = _exposure_cases(plain)
    det = make_detector("exposure").fit(batch)
    state = {k: v for k, v in det.__getstate__().items() if k != "veils_count_"}
    old = type(det).__new__(type(det))
    old.__setstate__({**state, "_format": 6})
    assert old.veils_count_ and not det.veils_count_
    assert old.evident(det.decision_scores_)[case["veiled"]].all()
    assert old.evident(det.decision_scores_, batch)[case["veiled"]].all()


@pytest.mark.parametrize("key, measure", [("soft", "sharpness"), ("flat", "local_contrast")])
def test_only_a_gap_a_person_would_see_counts_as_evidence(key, measure):
    """Every camera has a softest and flattest tenth. On a camera with a steady sunny season, a
    tenth of frames 8% below the rest ranks high, but no person would call it junk: `evident`
    singles it out no more than the other frames, and the consensus counts no evidence from
    ranks that are not evident. The same frames at 0.4 of the measure are evident junk."""
    from pipeline.detectors import cause_scores, counted_ranks

    block = slice(N // 2, N // 2 + N // 10)
    for factor, visible in ((0.92, False), (0.4, True)):
        batch, junk = _series(block, measure, factor, seed=2, clearest=0.97)
        det = make_detector(key).fit(batch)
        scores = det.decision_scores_
        evident = det.evident(scores)
        assert evident[~junk].mean() < 0.15  # low sun in a wide pool: a few frames
        if visible:
            assert evident[junk].mean() > 0.95
        else:
            assert roc_auc_score(junk, scores) > 0.6  # the mild tenth ranks high ...
            assert evident[junk].mean() < evident[~junk].mean() + 0.05  # ... and is no harm
        pcts = {key: det.percentile(scores)}
        counted = counted_ranks({key: det}, {key: scores}, pcts, batch)
        np.testing.assert_array_equal(counted[key][evident], pcts[key][evident])
        assert (counted[key][~evident] == 0).all()
        quality = cause_scores(counted, "family_tail", len(scores))["quality"]
        np.testing.assert_array_equal(quality > 0, evident & (pcts[key] > 0))


def _soft_saved_as(version: int, lacking: tuple[str, ...]):
    """A fitted `soft` and the same detector loaded from a pickle of format `version`, which
    lacked the attributes `lacking`."""
    batch, _ = _series(slice(0, 0), "sharpness", 1.0)
    det = make_detector("soft").fit(batch)
    state = {k: v for k, v in det.__getstate__().items() if k not in lacking}
    state["_format"] = version
    old = type(det).__new__(type(det))
    old.__setstate__(state)
    return det, old


def test_a_run_fitted_before_the_floor_counts_every_rank():
    """A detector pickled before `min_gap` existed (format 1) loads with no floor, so a
    stored run scores new frames as it scored its fit."""
    import pickle

    det, old = _soft_saved_as(1, ("min_gap", "dim_"))
    assert old.min_gap == -np.inf and old.dim_ is None
    assert old.evident(det.decision_scores_[np.isfinite(det.decision_scores_)]).all()
    assert pickle.loads(pickle.dumps(det)).min_gap is None


def test_a_frame_too_dark_to_see_is_named_too_dark_not_fog():
    """A dim room at dawn, as dark as the other dawns: `exposure` sees nothing, `flat` sees
    frames with no local contrast. A frame under `DIM_LUMA` is flat because it is dark, so its
    `flat` evidence names it "too dark"; a flat frame in good light stays "fog or haze"."""
    from pipeline.detectors.own import DIM_LUMA
    from pipeline.incidents import cause_evidence, name_cause

    batch, junk = _series(slice(500, 560), "local_contrast", 0.3)
    stats = batch.stats.copy()
    dark = junk & (np.arange(len(junk)) < 530)  # the first half of the episode is black
    stats.loc[dark, "mean_luma"] = 3.0
    batch = FrameBatch(**{**batch.__dict__, "stats": stats})
    det = make_detector("flat").fit(batch)
    split = det.cause_split()
    assert set(split) == {"fog or haze", "too dark"}
    np.testing.assert_array_equal(split["too dark"], (stats["mean_luma"] < DIM_LUMA).to_numpy())
    np.testing.assert_array_equal(split["fog or haze"] + split["too dark"], 1.0)

    pcts = {"flat": det.percentile(det.decision_scores_)}
    evidence = cause_evidence(pcts, {"flat": split}, len(junk))
    assert name_cause(evidence[dark])[0] == "too dark"
    assert name_cause(evidence[junk & ~dark])[0] == "fog or haze"


def test_a_run_fitted_before_dim_frames_were_kept_names_by_the_plain_cause():
    """A detector pickled before `dim_` (format 2) names every frame by its plain cause, as
    the run it came from did."""
    det, old = _soft_saved_as(2, ("dim_",))
    assert old.dim_ is None and old.min_gap is None
    assert old.cause_split()["blur"].tolist() == [1.0] * len(det.decision_scores_)


def _year_without_a_place(seed: int = 0) -> tuple[FrameBatch, np.ndarray, np.ndarray]:
    """A year of hourly frames from 07:00 to 17:00 on a camera clock in Vancouver, lit by the
    real sun there (dark winter mornings and evenings, bright summer ones), with ten days of
    water streaks in June (sharpness x 0.35); the batch has no place. Returns the batch, the
    episode mask and the daylight mask (the sun 3 degrees up or more)."""
    from pipeline.daylight import sun_position

    rng = np.random.default_rng(seed)
    hours = np.arange(7, 18)
    days = np.repeat(np.arange(365), len(hours))
    clock = np.tile(hours, 365)
    local = np.datetime64("2023-01-01T00:00") + days * np.timedelta64(1, "D")
    local = local + clock * np.timedelta64(1, "h")
    utc = pd.DatetimeIndex(local).tz_localize("America/Vancouver", nonexistent="shift_forward")
    utc = utc.tz_convert("UTC").tz_localize(None)
    elevation, _ = sun_position(utc, LAT, LON)
    light = np.sin(np.radians(np.clip(elevation, 0.5, None)))
    sharp_light = _sharp_light(np.clip(elevation, 0, 60) / 60)
    grey = np.repeat(rng.uniform(0.7, 1.0, 365) ** 2, len(hours))
    junk = (days >= 160) & (days < 170)
    sharpness = 400 * sharp_light * grey * rng.lognormal(0, 0.1, len(days))
    sharpness *= np.where(junk, 0.35, 1)
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(len(days)) + 1,
            "taken_at": local,
            "taken_at_utc": utc,
            "daylight": "day",
            "mean_luma": 20 + 160 * light,
            "contrast": 30.0,
            "sharpness": sharpness,
            "colorfulness": 20.0,
            "local_contrast": 10.0,
        }
    )
    ids = frames["frame_id"].to_numpy()
    batch = FrameBatch.from_frames(ids, np.zeros((len(ids), 0), np.float32), frames)
    return batch, junk, elevation >= 3


class _ClockOnly(SoftDetector):
    """`soft` with the pools the code before declination bins made (the clock time alone)."""

    def _keys(self, batch):
        self.by_declination_ = False
        return super()._keys(batch)


def _winter_share_of_top(batch: FrameBatch, scores: np.ndarray, day: np.ndarray) -> float:
    """The share of December to February among the top 5% of the `day` frames."""
    top = np.argsort(-np.where(day, scores, -np.inf))[: int(0.05 * day.sum())]
    return float(np.isin(pd.DatetimeIndex(batch.local_time[top]).month, [12, 1, 2]).mean())


def test_without_a_place_the_pool_is_the_same_clock_time_in_the_same_season():
    """Without a place the sun's position is unknown, but at one place the clock time and the
    sun's declination fix it: a June 07:00 frame is compared with the 07:00 frames of May,
    July and (the same declination) late April and August, not with December's dark
    mornings. Over a year the streaked June days are then what `soft` ranks first (AUC 0.99;
    December to February hold 23% of its top 5%), not the winter mornings (pooled by the
    clock alone they held 39%)."""
    batch, junk, day = _year_without_a_place()
    det = make_detector("soft").fit(batch)
    assert not det.by_sun_ and det.by_declination_
    scores = det.decision_scores_
    assert roc_auc_score(junk[day], scores[day]) > 0.97
    winter = _winter_share_of_top(batch, scores, day)
    assert winter < 0.3
    assert winter < _winter_share_of_top(batch, _ClockOnly().fit(batch).decision_scores_, day) - 0.1
    np.testing.assert_allclose(det.decision_function(batch), scores)


def test_a_run_fitted_before_declination_pools_keeps_its_clock_pools():
    """A detector pickled before declination bins (format 3) was fitted on clock-time pools
    alone: it loads with them and scores its own fit frames as it did, not as a new fit."""
    batch, _, _ = _year_without_a_place()
    before = _ClockOnly().fit(batch)
    assert {len(key) for key in before.values_} == {2}
    lacking = ("by_declination_", "declination_tolerance")
    state = {k: v for k, v in before.__getstate__().items() if k not in lacking}
    state["_format"] = 3
    old = SoftDetector.__new__(SoftDetector)
    old.__setstate__(state)
    assert old.by_declination_ is False
    np.testing.assert_allclose(old.decision_function(batch), before.decision_scores_)
    now = make_detector("soft").fit(batch)
    assert not np.allclose(now.decision_scores_, before.decision_scores_)


def test_water_down_part_of_a_busy_view_is_seen_cell_by_cell():
    """Water on the left of the lens for twelve days (10% of the frames) over a busy street:
    the road's cells come and go with the traffic and grey days soften everything, so the
    whole frame's sharpness hardly tells the smear from the weather; in their own spread two
    cells are far softer than ever, and `soft_cells` sees nearly every frame of it."""
    rng = np.random.default_rng(3)
    days, local, light = _clock()
    grey = np.repeat(rng.uniform(0.7, 1.0, N_DAYS) ** 2, len(HOURS))
    traffic = np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.6, 0.6, 0.6])  # the bottom row is road
    cells = (400 * light * grey)[:, None] * rng.lognormal(0, traffic, (len(days), 9))
    junk = np.zeros(len(days), bool)
    junk[N // 2 : N // 2 + N // 10] = True
    cells[np.ix_(junk, [0, 3])] *= 0.3  # the smear: the top two cells of the left column
    sharpness = cells.mean(axis=1)
    frames = _frames(
        local,
        mean_luma=60 + 80 * light,
        contrast=40.0,
        sharpness=sharpness,
        local_contrast=10.0,
        sharpness_cells=list(cells),
    )
    batch = FrameBatch.from_frames(
        frames["frame_id"].to_numpy(),
        np.zeros((len(days), 0), np.float32),
        frames,
        lat=LAT,
        lon=LON,
    )
    soft = make_detector("soft").fit(batch)
    cellwise = make_detector("soft_cells").fit(batch)
    # measured: 0.96 cell by cell, 0.55 for the whole frame (grey days are as soft)
    assert roc_auc_score(junk, cellwise.decision_scores_) > 0.93
    assert roc_auc_score(junk, soft.decision_scores_) < 0.7
    assert cellwise.evident(cellwise.decision_scores_)[junk].mean() > 0.95
