"""Incidents from a planted sequence of flags: the gap rule, night and twilight, the peak, the
members; the cause rule (largest summed evidence, near-ties by the order of plain causes); every
detector's plain cause comes from the one list; the frames whose evidence is kept for other
choices of causes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.detectors import DETECTORS, PLAIN_CAUSES, Detector, register
from pipeline.detectors.consensus import sum_causes
from pipeline.incidents import (
    FLAGGABLE_MARGIN,
    cause_evidence,
    find_incidents,
    flaggable,
    name_cause,
    takes_frames_daily,
)

START = np.datetime64("2024-04-02T00:00")


def _sequence(
    flagged: list[int],
    n: int = 144,
    night: tuple[int, int] = (42, 120),
    twilight: tuple[int, ...] = (),
) -> dict:
    """One day of frames ten minutes apart (index = frame id - 1): night before frame `night[0]`
    and from `night[1]`, twilight where given, flags at `flagged`, score = 1 + index / 1000."""
    idx = np.arange(n)
    daylight = np.where((idx < night[0]) | (idx >= night[1]), "night", "day").astype(object)
    daylight[list(twilight)] = "twilight"
    flags = np.zeros(n, bool)
    flags[flagged] = True
    scores = 1 + idx / 1000
    return {
        "frame_ids": idx + 1,
        "local_time": START + idx * np.timedelta64(10, "m"),
        "daylight": daylight,
        "flags": flags,
        "scores": scores,
        "pcts": scores / 2,
        "evidence": pd.DataFrame({"too dark": np.ones(n)}),
    }


def _find(seq: dict, gap: int = 2):
    return find_incidents(
        seq["frame_ids"],
        seq["local_time"],
        seq["daylight"],
        seq["flags"],
        seq["scores"],
        seq["pcts"],
        seq["evidence"],
        gap,
    )


def test_flags_within_the_gap_are_one_incident_and_beyond_it_two():
    # 50, 51, 52 flagged; 53, 54 not; 55 flagged (gap 2: the same incident); 56-58 not;
    # 59 flagged (gap 3: a new one)
    found = _find(_sequence([50, 51, 52, 55, 59]))
    table = found.table
    assert list(table["incident_id"]) == [1, 2]
    first, second = table.iloc[0], table.iloc[1]
    assert (first["n_frames"], first["n_flagged"]) == (6, 4)
    assert pd.Timestamp(first["started_at"]) == pd.Timestamp(START + 50 * np.timedelta64(10, "m"))
    assert first["duration_s"] == 5 * 600
    assert first["frame_id"] == 56  # the peak: the highest score among its flagged frames
    assert (second["n_frames"], second["n_flagged"], second["frame_id"]) == (1, 1, 60)
    members = found.frames[found.frames["incident_id"] == 1]
    assert list(members["frame_id"]) == [51, 52, 53, 54, 55, 56]  # the gap frames belong to it
    assert list(members["is_flagged"]) == [True, True, True, False, False, True]
    wider = _find(_sequence([50, 51, 52, 55, 59]), gap=3).table
    assert len(wider) == 1 and wider["n_frames"].iloc[0] == 10
    assert len(_find(_sequence([50, 51, 52, 55, 59]), gap=0).table) == 3


def test_a_night_is_not_an_incident_and_ends_one():
    # 10 and 130 are night frames; 118, 119 the last day frames, 120 onwards night
    seq = _sequence([10, 118, 119, 121, 130])
    table = _find(seq).table
    assert list(table["frame_id"]) == [120]  # 118-119: the flagged night frames are left out
    assert table["n_frames"].iloc[0] == 2
    # two flagged day frames with only a night frame between are two incidents, whatever
    # the gap
    seq = _sequence([60, 62])
    seq["daylight"][61] = "night"
    found = _find(seq, gap=5).table
    assert list(found["frame_id"]) == [61, 63] and list(found["n_frames"]) == [1, 1]


def test_a_camera_that_sleeps_at_night_starts_a_new_incident_each_day():
    # hourly frames 08:00-17:00 over three days, no frame at night (Kat Kam): every one
    # flagged was one incident of 30 frames "2017-04-30 19:00 to 07:00"
    hours = np.array([d * 24 + h for d in range(3) for h in range(8, 18)])
    n = len(hours)
    seq = {
        "frame_ids": np.arange(n) + 1,
        "local_time": START + hours * np.timedelta64(1, "h"),
        "daylight": np.full(n, "day", dtype=object),
        "flags": np.ones(n, bool),
        "scores": np.ones(n),
        "pcts": np.full(n, 0.99),
        "evidence": pd.DataFrame({"too dark": np.ones(n)}),
    }
    table = _find(seq, gap=5).table
    assert list(table["n_frames"]) == [10, 10, 10]
    days = [pd.Timestamp(t).date() for t in table["started_at"]]
    assert days == [pd.Timestamp(t).date() for t in table["ended_at"]] and len(set(days)) == 3


def test_a_camera_that_takes_a_frame_a_day_keeps_an_episode_of_days_as_one_incident():
    """One frame a day at 17:40 (the aquarium): every frame is a new day of the clock, so the
    day cannot end an incident there; six flagged days with one unflagged between two of them
    are one incident, and a night frame still ends one."""
    n = 30
    flags = np.zeros(n, bool)
    flags[[10, 11, 12, 14, 15, 16]] = True
    flags[[20, 21]] = True
    daylight = np.full(n, "day", dtype=object)
    daylight[18] = "night"  # the tank's lights off: ends an incident whatever the gap
    flags[19] = True
    seq = {
        "frame_ids": np.arange(n) + 1,
        "local_time": np.datetime64("2024-01-01T17:40") + np.arange(n) * np.timedelta64(1, "D"),
        "daylight": daylight,
        "flags": flags,
        "scores": np.ones(n),
        "pcts": np.full(n, 0.99),
        "evidence": pd.DataFrame({"fog or haze": np.ones(n)}),
    }
    assert takes_frames_daily(seq["local_time"].astype("datetime64[ns]"))
    table = _find(seq, gap=2).table
    assert list(table["n_frames"]) == [7, 3] and list(table["n_flagged"]) == [6, 3]
    assert table["duration_s"].iloc[0] == 6 * 86400
    # the same frames an hour apart on one day each: a frame every hour is not a daily camera
    hourly = START + np.arange(n) * np.timedelta64(1, "h")
    assert not takes_frames_daily(hourly.astype("datetime64[ns]"))
    assert not takes_frames_daily(np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"))


def test_twilight_frames_count_and_frames_without_a_time_do_not():
    seq = _sequence([40, 41, 43], twilight=(40, 41))
    seq["local_time"] = seq["local_time"].copy()
    seq["local_time"][42] = np.datetime64("NaT")
    table = _find(seq).table
    assert len(table) == 1 and table["n_flagged"].iloc[0] == 3
    assert table["n_frames"].iloc[0] == 3  # the untimed frame between them takes no part


def test_no_flags_no_incidents_and_a_negative_gap_is_refused():
    assert len(_find(_sequence([]))) == 0
    with pytest.raises(ValueError, match="gap"):
        _find(_sequence([50]), gap=-1)


def test_the_cause_with_most_evidence_names_an_incident():
    evidence = pd.DataFrame(
        {"unusual": [3.0, 3.0], "something in the scene": [1.0, 0.5], "camera moved": [0.0, 4.0]}
    )
    assert name_cause(evidence) == ("unusual", pytest.approx(6 / 11.5))
    # within 15 % of the largest: the earlier plain cause wins (dark before fog before blur)
    tie = pd.DataFrame({"blur": [5.0], "fog or haze": [4.6], "too dark": [4.4], "unusual": [5.0]})
    assert name_cause(tie)[0] == "too dark"
    assert name_cause(pd.DataFrame({"blur": [0.0]})) == ("unusual", 0.0)
    assert name_cause(tie.iloc[:0]) == ("unusual", 0.0)


def test_cause_evidence_is_each_causes_strongest_detector():
    pcts = {
        "dark": np.array([0.99, 0.5]),
        "blurry": np.array([0.9, 0.99]),
        "lof": np.array([0.95, np.nan]),
    }
    splits = {"dark": {"too dark": 1.0}, "blurry": {"blur": 1.0}, "lof": {"unusual": 1.0}}
    got = cause_evidence(pcts, splits, n_reference=99)
    assert got["too dark"].tolist() == pytest.approx([-np.log(0.01), -np.log(0.5)])
    assert got["blur"].tolist() == pytest.approx([-np.log(0.1), -np.log(0.01)])
    # lof is a generalist: only its top tenth counts, rescaled (0.95 -> 0.5)
    assert got["unusual"].tolist() == pytest.approx([-np.log(0.5), 0.0])
    shared = cause_evidence(pcts, {"dark": {"blur": 1.0}, "blurry": {"blur": 1.0}}, 99)
    assert shared["blur"].tolist() == pytest.approx([-np.log(0.01), -np.log(0.01)])


def test_the_quality_checks_name_a_cause_by_their_ranks_as_they_stand():
    # a black frame: among the darkest by `exposure` (rank 0.995; its evidence starts at 0.97)
    # and the flattest by `flat` (0.998). Counted, exposure brings -log(0.17) against flat's
    # -log(0.002) and the frame was named "fog or haze"; ranked as they stand they are within
    # the tie, and "too dark" comes first
    pcts = {"exposure": np.array([0.995]), "flat": np.array([0.998]), "alignment": [0.96]}
    splits = {
        "exposure": {"too dark": 1.0},
        "flat": {"fog or haze": 1.0},
        "alignment": {"camera moved": 1.0},
    }
    got = cause_evidence({k: np.asarray(v) for k, v in pcts.items()}, splits, n_reference=999)
    assert got["too dark"].tolist() == pytest.approx([-np.log(0.005)])
    assert got["fog or haze"].tolist() == pytest.approx([-np.log(0.002)])
    assert name_cause(got)[0] == "too dark"
    # another cause's detector keeps the counted evidence: alignment's 0.96 is 0.2 of its tail
    assert got["camera moved"].tolist() == pytest.approx([-np.log(0.8)])
    # below its start a quality check says nothing, as in the consensus
    low = cause_evidence({"exposure": np.array([0.9])}, {"exposure": {"too dark": 1.0}}, 999)
    assert low["too dark"].tolist() == [0.0]


def test_every_detector_has_a_plain_cause_from_the_list_and_runs_record_it():
    for key, cls in DETECTORS.items():
        assert cls.plain_cause in PLAIN_CAUSES, key
        assert cls.facts()["plain_cause"] == cls.plain_cause
    assert DETECTORS["dark"].plain_cause == "too dark"
    assert DETECTORS["overexposed"].plain_cause == "too bright"
    assert DETECTORS["background"].plain_cause == "something in the scene"
    assert DETECTORS["iforest"].plain_cause == DETECTORS["temporal"].plain_cause == "unusual"

    # each detector also has a cause of junk, and its plain cause is one of that cause's
    assert DETECTORS["alignment"].plain_cause == "camera moved"
    assert {cls.cause for cls in DETECTORS.values()} == {"quality", "camera", "scene", "rarity"}

    class Vague(Detector):
        key, family, summary, cause = "vague_test", "quality", "x", "quality"
        plain_cause = "bad vibes"

    class Confused(Detector):
        key, family, summary, cause = "confused_test", "quality", "x", "quality"
        plain_cause = "camera moved"

    class Causeless(Detector):
        key, family, summary, plain_cause = "causeless_test", "quality", "x", "blur"

    with pytest.raises(ValueError, match="plain_cause 'bad vibes' is not one of"):
        register(Vague)
    with pytest.raises(ValueError, match="'camera moved' is not a quality cause"):
        register(Confused)
    with pytest.raises(ValueError, match="needs a cause"):
        register(Causeless)
    assert not {"vague_test", "confused_test", "causeless_test"} & set(DETECTORS)


def test_exposure_splits_its_evidence_into_too_dark_too_bright_and_veiled():
    """`exposure` judges either way: a frame darker than its pool's norm is "too dark", a
    brighter one "too bright" when it is bright in absolute terms; brighter but under
    `WASHED_OUT_LUMA` (Kat Kam's smoke: 150 where its days are 135) it is a veil, "fog or
    haze". A run fitted before the veil was kept calls every brighter frame "too bright"."""
    from pipeline.detectors import FrameBatch, make_detector

    n = 200
    luma = np.full(n, 120.0)
    luma[5], luma[6], luma[7] = 10.0, 250.0, 150.0
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(n) + 1,
            "taken_at": pd.NaT,
            "taken_at_utc": pd.NaT,
            "daylight": "day",
            "mean_luma": luma,
            "contrast": 30.0,
            "sharpness": 300.0,
            "colorfulness": 20.0,
            "local_contrast": 10.0,
        }
    )
    batch = FrameBatch.from_frames(
        frames["frame_id"].to_numpy(), np.zeros((n, 2), np.float32), frames
    )
    det = make_detector("exposure").fit(batch)
    split = det.cause_split()
    assert split["too dark"][5] == 1 and split["too bright"][6] == 1
    assert split["fog or haze"][7] == 1 and split["too bright"][7] == 0
    np.testing.assert_array_equal(sum(split.values()), 1.0)

    state = {k: v for k, v in det.__getstate__().items() if k != "veiled_"}
    old = type(det).__new__(type(det))
    old.__setstate__({**state, "_format": 3})
    assert old.veiled_ is None and old.cause_split()["too bright"][7] == 1


def test_flaggable_keeps_every_frame_a_consensus_of_some_causes_flags():
    rng = np.random.default_rng(3)
    by_cause = {c: rng.gamma(1.0, size=4000) for c in ("quality", "camera", "scene", "rarity")}
    by_cause["camera"][::7] = np.nan  # no opinion: adds nothing, as in the consensus
    contamination = 0.05
    keep = flaggable(by_cause, contamination)
    names = list(by_cause)
    for mask in range(1, 2 ** len(names)):
        chosen = [c for i, c in enumerate(names) if mask >> i & 1]
        summed = sum_causes(by_cause, chosen)
        flags = summed > np.quantile(summed, 1 - contamination)  # the Scorer's threshold
        assert flags.sum() > 0 and keep[flags].all(), chosen
    # the margin, not every frame: at most each set's top share
    assert keep.mean() <= 15 * FLAGGABLE_MARGIN * contamination and keep.mean() < 0.6
    assert not flaggable({"quality": np.arange(100.0)}, contamination)[:80].any()
    # a cause that sees nothing in most frames (evidence from its 95th percentile): its zeros
    # are not flaggable, whatever the tie at its quantile
    sparse = np.where(rng.random(4000) < 0.04, rng.gamma(1.0, size=4000) + 1, 0.0)
    assert flaggable({"camera": sparse}, contamination).sum() == (sparse > 0).sum()
