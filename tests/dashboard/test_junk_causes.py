"""The consensus over other junk causes (`store.causes`), recombined in SQL on the real demo
store: the run's own causes give the stored rows bit for bit; other causes move the flags the
way their scores say; every reader that shows the consensus reads the recombined one."""

from __future__ import annotations

import pandas as pd
import pytest

from store import facts
from store.causes import choose, with_causes
from store.db import scalar
from store.facts import FrameFilter

SCORES = (
    "SELECT frame_id, score, score_pct, is_outlier FROM outlier_scores "
    "WHERE run_id = $run_id AND detector = $detector ORDER BY frame_id"
)


def _scores(con, run_id, detector="consensus", causes=()):
    sql, params = with_causes(SCORES, {"run_id": run_id, "detector": detector}, run_id, causes)
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).df()


def test_the_runs_own_causes_give_the_stored_consensus_exactly(con, run_id):
    own = tuple(facts.own_causes(con, run_id))
    assert own == ("quality", "camera", "scene", "rarity")
    stored = _scores(con, run_id)
    recombined = _scores(con, run_id, causes=own)
    assert len(stored) == scalar(con, "SELECT count(*) FROM clusters WHERE run_id = ?", [run_id])
    pd.testing.assert_frame_equal(recombined, stored, check_exact=True)


def test_the_runs_own_causes_find_the_stored_incidents(con, run_id):
    own = tuple(facts.own_causes(con, run_id))
    columns = "run_id, incident_id, started_at, ended_at, duration_s, n_frames, n_flagged, "
    columns += "cause, cause_share, peak_score, peak_pct, frame_id"
    query = f"SELECT {columns} FROM incidents WHERE run_id = $run_id ORDER BY incident_id"
    stored = con.execute(query, {"run_id": run_id}).df()
    sql, params = with_causes(query, {"run_id": run_id}, run_id, own)
    found = con.execute(sql, params).df()
    assert len(stored) > 0
    # named by the same plain causes from the stored evidence (the share summed in another
    # order: equal to the last bits)
    assert stored["cause"].nunique() > 1 and not stored["cause"].isin(own).any()
    pd.testing.assert_frame_equal(found, stored, check_dtype=False, rtol=1e-12)
    members = "SELECT incident_id, frame_id, is_flagged FROM incident_frames "
    members += "WHERE run_id = $run_id ORDER BY incident_id, frame_id"
    sql, params = with_causes(members, {"run_id": run_id}, run_id, own)
    pd.testing.assert_frame_equal(
        con.execute(sql, params).df(),
        con.execute(members, {"run_id": run_id}).df(),
        check_dtype=False,
    )


def _laid_out_again(store_copy, layout):
    """The demo store's consensus flags with its frames laid out again in time (`layout`: the
    flags in time order -> one datetime64 per frame), every frame day: (flags, times, the
    incidents recombined in SQL, the incidents `pipeline.incidents` finds)."""
    import numpy as np

    import store
    from pipeline.incidents import find_incidents

    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        own = tuple(facts.own_causes(con, run_id))
        flags = con.execute(
            "SELECT s.frame_id, s.is_outlier FROM outlier_scores s JOIN frames f USING "
            "(frame_id) WHERE run_id = ? AND detector = 'consensus' AND f.taken_at IS NOT NULL "
            "ORDER BY f.taken_at, s.frame_id",
            [run_id],
        ).df()
        times = np.asarray(layout(flags["is_outlier"].to_numpy()), dtype="datetime64[ns]")
        con.register("_t", flags.assign(t=pd.to_datetime(times)))
        con.execute(
            "UPDATE frames SET taken_at = _t.t, daylight = 'day' FROM _t "
            "WHERE frames.frame_id = _t.frame_id"
        )
        query = "SELECT incident_id, started_at, ended_at, n_frames, n_flagged FROM incidents "
        query += "WHERE run_id = $run_id ORDER BY incident_id"
        sql, params = with_causes(query, {"run_id": run_id}, run_id, own)
        found = con.execute(sql, params).df()
    n = len(flags)
    python = find_incidents(
        flags["frame_id"].to_numpy(),
        times,
        np.full(n, "day", dtype=object),
        flags["is_outlier"].to_numpy(),
        np.arange(n, dtype=float),
        np.full(n, 0.99),
        pd.DataFrame({"blur": np.ones(n)}),
        2,
    ).table
    return flags, times, found, python


def test_found_again_an_incident_ends_with_the_camera_clocks_day(store_copy):
    """A camera that takes no frames at night (Kat Kam) has no night frame between two days:
    the recombined incidents end at the day's end, as `pipeline.incidents` finds them. The
    demo's frames are laid out again as ten daylight frames a day, a day starting between
    every two flagged frames close enough to be one incident."""
    import numpy as np

    splits = []

    def ten_a_day(flagged):
        day, slot, last_flag, times = 0, 0, -10, []
        for pos, hit in enumerate(flagged):
            if slot == 10 or (hit and pos - last_flag <= 3):
                splits.append(bool(hit and pos - last_flag <= 3))
                day, slot = day + 1, 0
            times.append(np.datetime64("2024-04-01T08:00") + np.timedelta64(24 * day + slot, "h"))
            slot += 1
            last_flag = pos if hit else last_flag
        return times

    _, _, found, python = _laid_out_again(store_copy, ten_a_day)
    assert any(splits)  # flags close enough to be one incident, now on two days
    assert (found["started_at"].dt.date == found["ended_at"].dt.date).all()
    assert found[["n_frames", "n_flagged"]].values.tolist() == (
        python[["n_frames", "n_flagged"]].values.tolist()
    )


def test_found_again_on_a_camera_that_takes_a_frame_a_day_an_incident_spans_days(store_copy):
    """A camera that takes one frame a day (the aquarium: at 17:40) has a new day of its clock
    between every two frames: there the day does not end an incident, so weeks of junk are
    one incident, in SQL as `pipeline.incidents` finds them. The demo's frames are laid out
    again one a day."""
    import numpy as np

    from pipeline.incidents import takes_frames_daily

    def one_a_day(flagged):
        times = np.datetime64("2024-04-01T17:40") + np.timedelta64(1, "D") * np.arange(len(flagged))
        times[::7] += np.timedelta64(3, "h")  # not always at the same minute
        return times

    flags, times, found, python = _laid_out_again(store_copy, one_a_day)
    assert takes_frames_daily(times)
    assert (found["started_at"].dt.date < found["ended_at"].dt.date).any()
    assert found[["n_frames", "n_flagged"]].values.tolist() == (
        python[["n_frames", "n_flagged"]].values.tolist()
    )
    assert len(found) < int(flags["is_outlier"].sum())  # flags a few days apart: one incident


def test_one_cause_alone_is_that_causes_score(con, run_id):
    # a cause's stored score is fitted with the run's contamination, as the consensus is
    for cause in facts.options(con, run_id)["causes"]:
        alone = _scores(con, run_id, causes=(cause,))
        stored = _scores(con, run_id, detector=f"cause:{cause}")
        assert list(alone["is_outlier"]) == list(stored["is_outlier"])
        assert alone["score"].tolist() == stored["score"].fillna(0.0).tolist()
        if stored["score"].notna().all():  # else the stored cause ranked fewer frames
            assert alone["score_pct"].tolist() == stored["score_pct"].tolist()


def test_frames_tied_at_the_lowest_score_rank_lowest(con, run_id, store_copy):
    """The camera cause sees nothing on most demo frames (it is knocked a few times) and scores
    them 0: recombined alone, those frames rank as the lowest frame, 1 / n, as `analyze` ranks
    them (`Scorer.percentile`), not as the top of their block; a run analysed before its
    params said `lowest_ties` keeps the block's top, as it stored it."""
    import store

    alone = _scores(con, run_id, causes=("camera",))
    n, low = len(alone), alone["score"] == alone["score"].min()
    assert 0.5 < low.mean() < 1
    assert (alone.loc[low, "score_pct"] == 1 / n).all()
    assert (alone.loc[~low, "score_pct"] > low.sum() / n).all()
    with store.connect(store_copy) as rw:
        rw.execute(
            "UPDATE analysis_runs SET params = json_merge_patch(params, '{\"lowest_ties\": null}') "
            "WHERE run_id = ?",
            [run_id],
        )
    with store.connect(store_copy, read_only=True) as old_con:
        query = "SELECT params->>'lowest_ties' FROM analysis_runs WHERE run_id = ?"
        assert scalar(old_con, query, [run_id]) is None
        old = _scores(old_con, run_id, causes=("camera",))
    assert (old.loc[low, "score_pct"] == low.sum() / n).all()
    assert old.loc[~low, "score_pct"].tolist() == alone.loc[~low, "score_pct"].tolist()


def _flagged_kinds(con, run_id, causes):
    flt = FrameFilter(run_id=run_id, threshold_kind="flagged", junk_causes=causes)
    ids = facts.frame_ids(con, flt)
    kinds = con.execute(
        "SELECT kind, count(*) FROM ground_truth WHERE frame_id IN (SELECT unnest(?)) "
        "GROUP BY kind",
        [ids],
    ).fetchall()
    return dict(kinds)


def test_other_causes_move_the_flags_their_way(con, run_id):
    every = _flagged_kinds(con, run_id, ())
    quality = _flagged_kinds(con, run_id, ("quality",))
    scene = _flagged_kinds(con, run_id, ("camera", "scene"))
    bad_image = ("fog", "black", "washed_out")
    in_front = ("person", "knocked", "bird", "fox")
    count = lambda kinds, names: sum(kinds.get(k, 0) for k in names)  # noqa: E731
    # counting only image quality: every bad image still flagged, nothing in front of the lens
    assert count(quality, bad_image) >= count(every, bad_image) > 0
    assert count(quality, in_front) == 0 < count(every, in_front)
    # counting only the camera and the scene: the reverse
    assert count(scene, in_front) > count(every, in_front)
    assert count(scene, bad_image) < count(every, bad_image)


def test_readers_show_the_chosen_consensus(con, run_id):
    own = FrameFilter(run_id=run_id)
    quality = own.replace(junk_causes=("quality",))
    flagged = set(_scores(con, run_id, detector="cause:quality").query("is_outlier")["frame_id"])
    assert facts.summary(con, quality)["n_flagged"] == len(flagged)
    assert set(facts.frame_ids(con, quality.replace(threshold_kind="flagged"))) == flagged
    rows, total = facts.frames_page(con, quality, 0, 5)
    best = _scores(con, run_id, detector="cause:quality").sort_values("score").iloc[-1]
    assert int(rows["frame_id"].iloc[0]) == int(best["frame_id"])
    assert rows["score"].iloc[0] == best["score"]
    per = facts.outliers_per_detector(con, quality).set_index("detector")
    assert per.loc["consensus", "n_flagged"] == len(flagged)
    assert (
        per.loc["lof", "n_flagged"]
        == facts.outliers_per_detector(con, own).set_index("detector").loc["lof", "n_flagged"]
    )
    one = int(best["frame_id"])
    scores = facts.scores_for(con, run_id, [one], ("quality",)).set_index("detector")
    assert scores.loc["consensus", "score"] == best["score"]
    exported = set(facts.export_frames(con, quality, "clean")["frame_id"])
    assert not exported & flagged
    flagged_by_own = set(facts.frame_ids(con, own.replace(threshold_kind="flagged")))
    assert flagged_by_own - flagged and (flagged_by_own - flagged) <= exported


def _plain_causes_of(con, run_id, causes) -> set[str]:
    """The plain causes the run's detectors of `causes` name (their recorded facts)."""
    found = facts.run_params(con, run_id)["detector_facts"].values()
    return {f["plain_cause"] for f in found if f.get("cause") in causes and f.get("plain_cause")}


def test_incidents_are_found_again_and_named_by_cause(con, run_id):
    own = FrameFilter(run_id=run_id)
    quality = own.replace(junk_causes=("quality",))
    listed = facts.incident_list(con, quality)
    assert listed["n"] > 0
    # named in a camera owner's words from the quality detectors' evidence alone
    names = set(listed["rows"]["cause"])
    assert names <= _plain_causes_of(con, run_id, {"quality"}) and len(names) > 1, names
    assert listed["rows"]["cause_share"].between(0, 1, inclusive="right").all()
    both = facts.incident_list(con, own.replace(junk_causes=("quality", "scene")))
    assert set(both["rows"]["cause"]) <= _plain_causes_of(con, run_id, {"quality", "scene"})
    assert "something in the scene" in set(both["rows"]["cause"])
    first = listed["rows"].iloc[0]
    strip = facts.incident_strip(con, run_id, int(first["incident_id"]), junk_causes=("quality",))
    assert len(strip["ids"]) == int(first["n_frames"])
    assert len(strip["flagged"]) == int(first["n_flagged"])
    assert int(first["frame_id"]) in strip["ids"]
    flagged = set(facts.frame_ids(con, quality.replace(threshold_kind="flagged")))
    assert set(strip["flagged"]) <= flagged
    # the cards drawn are this incident's frames with the chosen consensus's scores (not the
    # run's stored incident of the same number, nor the stored consensus)
    rows = strip["rows"].set_index("frame_id")
    assert len(rows) and set(rows.index) <= set(strip["ids"])
    chosen = _scores(con, run_id, causes=("quality",)).set_index("frame_id")
    assert rows["score"].tolist() == chosen.loc[rows.index, "score"].tolist()


def test_choose_keeps_the_runs_stored_causes_in_the_runs_order():
    stored = own = ["quality", "camera", "scene", "rarity"]
    assert choose(["rarity", "scene", "camera", "quality"], stored, own) == ()
    assert choose(["scene", "quality", "nonsense"], stored, own) == ("quality", "scene")
    assert choose(["nonsense"], stored, own) == ()
    assert choose([], stored, own) == ()
    assert choose(["quality", "camera"], stored, ["quality"]) == ("quality", "camera")


def _export(db, tmp_path, *args):
    from click.testing import CliRunner

    from pipeline.cli import cli

    out = tmp_path / "clean.csv"
    result = CliRunner().invoke(
        cli,
        ["export", "--db", str(db), "--no-progress", "--frames", "clean", "--out", str(out), *args],
    )
    return result, out


def test_export_counts_the_junk_causes_given(demo_store, con, run_id, tmp_path):
    quality = FrameFilter(run_id=run_id, junk_causes=("quality",))
    flagged = set(facts.frame_ids(con, quality.replace(threshold_kind="flagged")))
    every = set(facts.frame_ids(con, FrameFilter(run_id=run_id)))
    result, out = _export(demo_store, tmp_path, "--junk-causes", "quality")
    assert result.exit_code == 0, result.output
    assert "--junk-causes quality" in result.output
    exported = set(pd.read_csv(out, comment="#")["frame_id"])
    assert exported == every - flagged
    result, out = _export(demo_store, tmp_path)  # the run's own
    assert (
        set(pd.read_csv(out, comment="#")["frame_id"])
        == {*facts.export_frames(con, FrameFilter(run_id=run_id), "clean")["frame_id"]}
        != exported
    )


def test_export_refuses_an_unknown_cause_in_one_line(demo_store, tmp_path):
    result, out = _export(demo_store, tmp_path, "--junk-causes", "quality,vibes")
    assert result.exit_code == 1
    assert "--junk-causes: unknown value 'vibes'" in result.output
    assert "quality, camera, scene, rarity" in result.output
    assert not out.exists()


@pytest.fixture
def app(demo_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    monkeypatch.setenv("TIMELAPSE_DB", str(demo_store))
    monkeypatch.setenv("TIMELAPSE_LOCK_WAIT_S", "2")

    def make(**params) -> AppTest:
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
        for key, value in params.items():
            at.query_params[key] = value
        return at

    return make


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_sidebar_control_follows_and_writes_the_url(app, con, run_id):
    at = _ok(app().run())
    control = at.multiselect(key="f_causes")
    assert control.label == "Junk causes"
    assert control.value == ["quality", "camera", "scene", "rarity"]  # the run's own
    assert "causes" not in at.query_params
    _ok(control.set_value(["scene", "quality"]).run())
    assert at.query_params["causes"] == "quality,scene"
    _ok(at.multiselect(key="f_causes").set_value(["rarity", "scene", "camera", "quality"]).run())
    assert "causes" not in at.query_params  # the run's own again: the default


def test_a_shared_link_opens_the_incidents_of_its_causes(app, con, run_id):
    scene = facts.incident_list(con, FrameFilter(run_id=run_id, junk_causes=("scene",)))
    own = facts.incident_list(con, FrameFilter(run_id=run_id))
    assert set(own["rows"]["cause"]) != {"something in the scene"}  # other incidents
    at = app(causes="scene")
    at.switch_page("views/incidents.py").run()
    _ok(at)
    assert at.multiselect(key="f_causes").value == ["scene"]
    assert next(m.value for m in at.metric if m.label == "Incidents") == f"{scene['n']:,}"
    assert at.query_params["causes"] == "scene"
    assert set(at.dataframe[0].value["cause"]) == {"something in the scene"}


@pytest.mark.parametrize(
    "view",
    ["overview", "incidents", "gallery", "map", "clusters", "compare", "frame", "review"],
)
def test_every_page_draws_with_other_junk_causes(app, view):
    at = app(causes="quality,camera")
    at.switch_page(f"views/{view}.py").run()
    _ok(at)
    assert at.query_params["causes"] == "quality,camera"
    assert at.multiselect(key="f_causes").value == ["quality", "camera"]
