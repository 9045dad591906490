"""bench/learned.py on the demo store: it fits `learned` as `analyze` does, from the ranks
`analyze` fits it on; its simulation reports what it says; bad input is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def _bench(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "learned.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


def test_the_bench_fits_learned_as_analyze_does(store_copy, monkeypatch):
    """The same reviews, fitted by the bench on a run's stored ranks and its fitted state's
    projection of the stored vectors, give the `learned` scores `analyze` wrote for them."""
    import store
    from pipeline.analyze import analyze
    from pipeline.detectors.learned import Learned
    from pipeline.settings import Settings
    from store import analysis as sa
    from store import reviews

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import learned as bench

    with store.connect(store_copy) as con:
        truth = sa.load_ground_truth(con)
        junk = truth.loc[truth["is_anomaly"].astype(bool), "frame_id"].to_numpy()[:6]
        keep = truth.loc[~truth["is_anomaly"].astype(bool), "frame_id"].to_numpy()[::7][:12]
        reviews.set_verdicts(con, junk.tolist(), "junk")
        reviews.set_verdicts(con, keep.tolist(), "keep")
    result = analyze(store_copy, Settings(model="pixels"), progress=False)
    assert "learned" in result.detectors
    pcts, consensus, view, table = bench.load(store_copy, "pixels", None, None, None)
    ids = table["frame_id"].to_numpy()
    reviewed = np.flatnonzero(np.isin(ids, np.concatenate([junk, keep])))
    refit = Learned(list(pcts)).fit(pcts, consensus, reviewed, np.isin(ids[reviewed], junk), view)
    with store.connect(store_copy, read_only=True) as con:
        stored = sa.run_scores(con, result.run_id)
        record = sa.get_run(con, result.run_id)["params"]["learned"]
    stored = stored[stored["detector"] == "learned"].set_index("frame_id").loc[ids, "score"]
    np.testing.assert_allclose(refit.decision_scores_, stored.to_numpy(float), atol=1e-9)
    assert refit.record() == record


def test_the_simulation_reports_each_users_reviews(demo_store):
    done = _bench(demo_store, "--truth", "--model", "pixels", "--reviews", "40", "--seeds", "3")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["runs"]
    assert [r["seed"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert row["reviews"] == 40 and row["junk"] + row["keep"] == 40
        if min(row["junk"], row["keep"]) >= 5:
            assert len(row["learned"]) == 2 and row["cross_validated"]["folds"] >= 2
        else:
            assert row["learned"] is None
    fitted = [r for r in rows if r["learned"]]
    summary = report["summary"]["40"]
    assert summary["runs"] == 3 and summary["fitted"] == len(fitted)
    if fitted:
        assert (
            summary["learned_mean"]
            == np.round(np.mean([r["learned"] for r in fitted], axis=0), 3).tolist()
        )
    top = _bench(demo_store, "--truth", "--model", "pixels", "--reviews", "30", "--order", "top")
    assert top.returncode == 0, top.stderr
    assert [r["seed"] for r in json.loads(top.stdout)["runs"]] == [0]


def test_the_review_orders_and_the_held_half(demo_store, monkeypatch):
    """`mixed` takes the consensus's highest unreviewed frame and one of a seeded draw in turn,
    `balanced` the highest while the junk reviewed are no more than the kept; `--hold-half`
    measures every order on the same half of the sample, which no order reviews."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import learned as bench

    pool = np.arange(10, 30)
    consensus = np.zeros(40)
    consensus[pool] = np.linspace(0, 1, len(pool))  # the highest: 29, 28, 27, ...
    junk = np.zeros(40, bool)
    junk[[29, 28, 27]] = True
    drawn = np.random.default_rng(4).permutation(pool)
    mixed = bench._reviewed("mixed", pool, consensus, 6, 4, junk)
    picked: list[int] = []
    for i in range(6):  # the highest, the next of the draw, the highest left, ...
        source = range(29, 9, -1) if i % 2 == 0 else drawn
        picked.append(next(int(f) for f in source if f not in picked))
    assert list(mixed) == sorted(picked)
    assert {29, 28, 27} <= set(picked)
    # balanced: the top while junk <= keep; the top three are junk, so from the second on
    # it draws until the kept catch up
    balanced = bench._reviewed("balanced", pool, consensus, 4, 4, junk)
    assert 29 in balanced and len(set(balanced)) == 4
    assert list(bench._reviewed("top", pool, consensus, 3, 0, junk)) == [27, 28, 29]
    assert set(bench._reviewed("random", pool, consensus, 5, 4, junk)) == set(drawn[:5])

    runs = {}
    for order in ("random", "mixed"):
        done = _bench(
            demo_store,
            "--truth",
            "--model",
            "pixels",
            "--reviews",
            "20",
            "--seeds",
            "2",
            "--order",
            order,
            "--hold-half",
        )
        assert done.returncode == 0, done.stderr
        runs[order] = json.loads(done.stdout)
    full = json.loads(
        _bench(demo_store, "--truth", "--model", "pixels", "--reviews", "40", "--seeds", "1").stdout
    )
    n_day = full["sample_day_frames"]
    assert runs["random"]["sample_day_frames"] == runs["mixed"]["sample_day_frames"] == n_day // 2
    # one test set: the consensus measures the same on it whatever was reviewed
    assert {tuple(r["consensus"]) for o in runs.values() for r in o["runs"]} == {
        tuple(runs["random"]["runs"][0]["consensus"])
    }
    assert {r["junk"] + r["keep"] for o in runs.values() for r in o["runs"]} == {20}


def test_the_order_where_learned_is_least_sure(demo_store, monkeypatch):
    """`doubt`: the teaching order until a model can be fitted, then each round the frames
    nearest the meeting rank (here a fixed distance from frame 15), ties by position."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import learned as bench

    pool = np.arange(10, 30)
    consensus = np.zeros(40)
    consensus[pool] = np.linspace(0, 1, len(pool))
    junk = np.zeros(40, bool)
    junk[[29, 28, 27]] = True
    asked = []

    def least_sure(reviewed):
        asked.append(len(reviewed))
        return None if len(reviewed) < 4 else np.abs(np.arange(40) - 15.0)

    got = bench._reviewed_by_doubt(pool, consensus, 8, 4, junk, least_sure, 2)
    taught = bench._reviewed("mixed", pool, consensus, 4, 4, junk)
    left = [f for f in (15, 14, 16, 13, 17, 12, 18) if f not in taught][:4]
    assert list(got) == sorted([*taught, *left])
    assert asked == [2, 4, 6]  # fitted after every round of 2
    assert len(bench._reviewed_by_doubt(pool, consensus, 50, 4, junk, least_sure, 8)) == 20

    done = _bench(
        demo_store, "--truth", "--model", "pixels", "--reviews", "20", "--seeds", "1",
        "--order", "doubt", "--round", "10", "--hold-half",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["order"] == "doubt" and report["round"] == 10
    assert [r["junk"] + r["keep"] for r in report["runs"]] == [20]


def test_bad_input_is_refused_with_a_message(demo_store, store_copy, tmp_path):
    import store

    with store.connect(store_copy) as con:
        con.execute("DELETE FROM ground_truth")
    for args, says in (
        ([demo_store, "--truth", "--model", "pixels", "--reviews", "x"], "whole numbers"),
        ([tmp_path / "none.duckdb", "--truth", "--model", "pixels"], "does not exist"),
        ([store_copy, "--truth", "--model", "pixels"], "no ground truth"),
        ([demo_store, "--truth", "--model", "vgg16-hed-grid"], "no complete vgg16-hed-grid run"),
        ([demo_store, "--model", "pixels"], "give --labels"),
        ([demo_store, "--truth", "--model", "pixels", "--causes", "nope"], "nope"),
        ([demo_store, "--truth", "--model", "pixels", "--complete"], "--complete is for"),
        ([demo_store, "--truth", "--model", "pixels", "--round", "0"], "--round must be"),
    ):
        done = _bench(*args)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)
