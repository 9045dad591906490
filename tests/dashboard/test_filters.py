"""URL filters: parse, validate, serialise; hostile values are ignored with a notice."""

from __future__ import annotations

from datetime import date

import pytest

from dashboard import filters
from store.facts import FrameFilter

OPTS = {
    "date_min": date(2024, 4, 1),
    "date_max": date(2024, 4, 7),
    "n_frames": 100,
    "clusters": [-1, 0, 1, 2],
    "conditions": ["clear", "fog", "rain", "unknown"],
    "daylight": ["day", "twilight", "night"],
    "detectors": ["consensus", "iforest", "lof"],
    "runs": [3, 1],
    "causes": ["quality", "camera", "scene", "rarity"],
    "junk_causes": ["quality", "camera", "scene", "rarity"],
}


def test_round_trip_of_every_filter():
    flt = FrameFilter(
        run_id=1,
        date_from=date(2024, 4, 2),
        date_to=date(2024, 4, 3),
        hour_from=6,
        hour_to=18,
        daylight=("day", "twilight"),
        conditions=("fog",),
        clusters=(0, 2),
        detector="lof",
        threshold_kind="pct",
        threshold=97.5,
        junk_causes=("quality", "camera"),
    )
    url = filters.serialise(flt, OPTS)
    assert url == {
        "run": "1",
        "from": "2024-04-02",
        "to": "2024-04-03",
        "hours": "6-18",
        "daylight": "day,twilight",
        "weather": "fog",
        "cluster": "0,2",
        "det": "lof",
        "thr": "pct97.5",
        "causes": "quality,camera",
    }
    back, notices = filters.parse(url, OPTS)
    assert notices == []
    assert back == flt


def test_a_cause_score_is_a_detector_of_the_url():
    """Each cause of junk's score is stored as detector `cause:<cause>`; the URL can rank by
    it, and a made-up cause is refused like any unknown detector."""
    opts = {**OPTS, "detectors": [*OPTS["detectors"], "cause:quality", "cause:scene"]}
    flt, notices = filters.parse({"det": "cause:quality"}, opts)
    assert notices == [] and flt.detector == "cause:quality"
    assert filters.serialise(flt, opts) == {"det": "cause:quality"}
    flt, notices = filters.parse({"det": "cause:vibes"}, opts)
    assert flt.detector == "consensus" and "is not a detector" in notices[0]
    flt, notices = filters.parse({"det": "cause:quality:x"}, opts)
    assert flt.detector == "consensus" and len(notices) == 1


def test_junk_causes_in_the_url():
    """`causes`: the run's stored causes in the run's order; the run's own set (in any order)
    is the default and stays out of the URL; unknown names are dropped with a notice."""
    flt, notices = filters.parse({"causes": "scene,quality"}, OPTS)
    assert notices == [] and flt.junk_causes == ("quality", "scene")
    assert filters.serialise(flt, OPTS) == {"causes": "quality,scene"}
    flt, notices = filters.parse({"causes": "rarity,scene,camera,quality"}, OPTS)
    assert notices == [] and flt.junk_causes == () and filters.serialise(flt, OPTS) == {}
    flt, notices = filters.parse({"causes": "quality,vibes,quality"}, OPTS)
    assert flt.junk_causes == ("quality",) and len(notices) == 1 and "'vibes'" in notices[0]
    own = {**OPTS, "junk_causes": ["quality", "camera"]}  # a building site's run
    flt, _ = filters.parse({"causes": "quality,camera,scene,rarity"}, own)
    assert flt.junk_causes == ("quality", "camera", "scene", "rarity")
    state = filters.to_widgets(FrameFilter(run_id=3), own)
    assert state[filters.W_CAUSES] == ["quality", "camera"]  # the widget shows the run's own
    assert filters.from_widgets(state, own).junk_causes == ()
    state[filters.W_CAUSES] = ["scene", "nonsense"]
    assert filters.from_widgets(state, own).junk_causes == ("scene",)
    assert "junk causes scene" in filters.describe(filters.from_widgets(state, own))


def test_defaults_are_left_out_of_the_url():
    flt, notices = filters.parse({}, OPTS)
    assert notices == []
    assert flt.run_id == 3 and flt.detector == "consensus" and flt.threshold_kind == "all"
    assert filters.serialise(flt, OPTS) == {}


@pytest.mark.parametrize(
    "thr, kind, value",
    [
        ("top25", "topk", 25.0),
        ("flagged", "flagged", 0.0),
        ("pct90", "pct", 90.0),
        ("all", "all", 0.0),
    ],
)
def test_thresholds(thr, kind, value):
    flt, notices = filters.parse({"thr": thr}, OPTS)
    assert notices == [] and (flt.threshold_kind, flt.threshold) == (kind, value)
    assert filters.parse(filters.serialise(flt, OPTS), OPTS)[0] == flt


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"cluster": "99"}, "unknown cluster '99'"),
        ({"from": "2024-13-45"}, "not a date"),
        ({"from": "yesterday"}, "not a date"),
        ({"det": "iforest'; DROP TABLE frames; --"}, "not a detector"),
        ({"weather": "../../etc/passwd"}, "unknown weather value"),
        ({"hours": "20-4"}, "not an hour range"),
        ({"hours": "0-99"}, "not an hour range"),
        ({"run": "1 OR 1=1"}, "not a complete analysis run"),
        ({"thr": "pct150"}, "percentile must be 0-100"),
        ({"thr": "top0"}, "top-k needs k >= 1"),
        ({"thr": "top-5"}, "is not one of"),
        ({"daylight": "dusk"}, "unknown daylight value"),
        ({"cluster": "x" * 10_000}, "value too long"),
        ({"nonsense": "1"}, "unknown URL parameter"),
        ({"causes": "'; DROP TABLE outlier_scores; --"}, "unknown junk cause"),
        ({"causes": "cause:quality"}, "unknown junk cause"),
        ({"causes": "q" * 500}, "value too long"),
    ],
)
def test_hostile_values_are_ignored_with_a_notice(params, fragment):
    flt, notices = filters.parse(params, OPTS)
    assert len(notices) == 1 and fragment in notices[0], notices
    default, _ = filters.parse({}, OPTS)
    assert flt == default
    assert all(len(n) < 300 for n in notices)


def test_partly_good_lists_keep_the_good_values():
    flt, notices = filters.parse({"cluster": "0,abc,1,0", "weather": "rain,snowstorm"}, OPTS)
    assert flt.clusters == (0, 1) and flt.conditions == ("rain",)
    assert len(notices) == 2


def test_reversed_dates_drop_the_end():
    flt, notices = filters.parse({"from": "2024-04-05", "to": "2024-04-02"}, OPTS)
    assert flt.date_from == date(2024, 4, 5) and flt.date_to is None
    assert "before 'from'" in notices[0]


def test_widgets_round_trip():
    flt = FrameFilter(
        run_id=3,
        date_from=date(2024, 4, 2),
        date_to=date(2024, 4, 7),
        hour_from=5,
        hour_to=9,
        clusters=(1,),
        detector="iforest",
        threshold_kind="topk",
        threshold=40,
    )
    state = filters.to_widgets(flt, OPTS)
    assert state[filters.W_DATES] == (date(2024, 4, 2), date(2024, 4, 7))
    assert filters.from_widgets(state, OPTS) == flt
    full = filters.to_widgets(FrameFilter(run_id=3), OPTS)
    assert filters.from_widgets(full, OPTS).date_from is None  # the whole span: no dates


def test_page_parameters():
    notices: list[str] = []
    assert filters.parse_int({"frame": "12"}, "frame", 1, 100, notices) == 12
    assert filters.parse_int({"frame": "1; DROP"}, "frame", 1, 100, notices) is None
    assert filters.parse_choice(
        {"cmp": "lof,x,iforest"}, "cmp", OPTS["detectors"], notices, many=True
    ) == ["lof", "iforest"]
    assert len(notices) == 2


def test_describe_says_what_is_kept():
    assert filters.describe(FrameFilter()) == "all frames"
    text = filters.describe(
        FrameFilter(
            hour_from=6,
            hour_to=18,
            conditions=("fog",),
            threshold_kind="topk",
            threshold=10,
            detector="lof",
        )
    )
    assert text == "hours 06:00-18:59; weather fog; top 10 by lof"
