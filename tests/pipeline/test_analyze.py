"""The analysis run: rows written, PCA bounded, clusters, neighbours, atomicity, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

import store
from pipeline.analyze import analyze
from pipeline.cli import cli
from pipeline.detectors import DETECTORS
from pipeline.errors import AnalysisError, InputError
from pipeline.settings import Settings
from store import analysis as sa
from store import kv

FAST = [
    "iforest",
    "lof",
    "regions",
    "knn",
    "ecod",
    "hbos",
    "temporal",
    "same_time",
    "background",
    "dark",
]


def _thumbnails(
    ids: np.ndarray, hours: np.ndarray, anomalies: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Small JPEG thumbnails of one fixed scene lit by the hour; anomalies have a figure."""
    import io

    from PIL import Image

    scene = rng.uniform(50, 210, size=(36, 64, 3))
    rows = []
    for i, hour in enumerate(hours):
        image = scene * (0.15 + 0.85 * max(0.0, np.sin(np.pi * (hour - 6) / 12)))
        image = image + rng.normal(0, 2, scene.shape)
        if i in anomalies:
            y, x = rng.integers(4, 24), rng.integers(4, 56)
            image[y : y + 10, x : x + 4] = (240, 220, 40)
        buf = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=92)
        rows.append((int(ids[i]), buf.getvalue(), 64, 36))
    return pd.DataFrame(rows, columns=["frame_id", "jpeg", "width", "height"])


def synthetic_store(
    db: Path,
    n_days: int = 4,
    per_day: int = 72,
    dim: int = 32,
    n_anomalies: int = 6,
    seed: int = 0,
    model: str = "fake",
) -> dict:
    """A store with frames (time, stats, daylight, thumbnails) and fake embeddings of a daily
    cycle.

    Anomalies are daytime frames pushed far along a random direction, made darker, and with a
    figure in their thumbnail.
    Returns ids of all frames and of the anomalies, and a truth DataFrame (path,label,kind).
    """
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    start = np.datetime64("2024-04-01T00:00:00")
    step = np.timedelta64(int(86400 / per_day), "s")
    times = start + step * np.arange(n)
    hours = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(float)
    phase = 2 * np.pi * hours / 24
    basis = rng.normal(size=(4, dim))
    feats = np.column_stack([np.sin(phase), np.cos(phase), np.sin(2 * phase), np.cos(2 * phase)])
    vectors = feats @ basis * 3 + rng.normal(scale=0.3, size=(n, dim))
    day = (hours >= 7) & (hours < 19)
    luma = np.where(day, 120 + 30 * np.sin(np.pi * (hours - 7) / 12), 15) + rng.normal(0, 3, n)
    day_idx = np.flatnonzero(day & (np.arange(n) > per_day))
    anomalies = rng.choice(day_idx, size=n_anomalies, replace=False)
    direction = rng.normal(size=dim)
    vectors[anomalies] += 6 * direction / np.linalg.norm(direction) * np.sqrt(dim) / 2
    luma[anomalies] = 5
    ids = np.arange(1, n + 1, dtype=np.int64)
    paths = [f"day{(i // per_day):02d}/frame_{i:05d}.jpg" for i in range(n)]
    frames = pd.DataFrame(
        {
            "frame_id": ids,
            "path": paths,
            "root": str(db.parent / "frames"),
            "location": [f"{db.parent / 'frames'}/{p}" for p in paths],
            "taken_at": pd.to_datetime(times),
            "taken_at_utc": pd.to_datetime(times).tz_localize("UTC"),
            "time_source": "exif",
            "file_bytes": 1000,
            "file_mtime": pd.Timestamp("2024-05-01", tz="UTC"),
            "mean_luma": luma,
            "contrast": np.where(day, 40, 8) + rng.normal(0, 1, n),
            "sharpness": np.where(day, 300, 20) + rng.normal(0, 5, n),
            "colorfulness": np.where(day, 30, 3) + rng.normal(0, 1, n),
            "daylight": np.where(day, "day", "night"),
        }
    )
    emb = pa.table(
        {
            "frame_id": pa.array(ids),
            "model": pa.array([model] * n),
            "vector": pa.array(list(vectors.astype(np.float32)), type=pa.list_(pa.float32())),
        }
    )
    with store.connect(db) as con:
        con.register("_f", frames)
        cols = ", ".join(frames.columns)
        con.execute(f"INSERT INTO frames ({cols}) SELECT {cols} FROM _f")
        con.register("_e", emb)
        con.execute(
            "INSERT INTO embeddings (frame_id, model, vector) "
            "SELECT frame_id, model, vector FROM _e"
        )
        con.execute(
            "INSERT INTO models (model, family, weights, dim) VALUES (?, 'fake', 'none', ?)",
            [model, dim],
        )
        con.register("_t", _thumbnails(ids, hours, set(anomalies.tolist()), rng))
        con.execute("INSERT INTO thumbnails SELECT frame_id, jpeg, width, height FROM _t")
    label = np.zeros(n, dtype=int)
    label[anomalies] = 1
    truth = pd.DataFrame(
        {"path": paths, "label": label, "kind": np.where(label == 1, "person", "normal")}
    )
    return {"ids": ids, "anomalies": ids[anomalies], "truth": truth, "vectors": vectors}


def fast_settings(**changes) -> Settings:
    return Settings(model="fake", detectors=FAST, n_clusters="3").replace(**changes)


@pytest.fixture
def analysed(tmp_path):
    db = tmp_path / "store.duckdb"
    data = synthetic_store(db)
    result = analyze(db, fast_settings(), progress=False)
    return db, data, result


def test_run_writes_every_table(analysed):
    db, data, result = analysed
    n = len(data["ids"])
    with store.connect(db, read_only=True) as con:
        run = sa.get_run(con, result.run_id)
        scores = sa.run_scores(con, result.run_id)
        clusters = sa.run_clusters(con, result.run_id)
        neighbors = sa.run_neighbors(con, result.run_id)
        fitted = sa.load_fitted(con, result.run_id)
    assert run["status"] == "complete" and run["n_frames"] == n and run["error"] is None
    assert run["params"]["pca_dims"] == result.n_dims <= 64
    assert set(run["timings"]) >= {"load", "preprocess", "neighbors", "clusters", "detector:lof"}
    causes = {"cause:rarity", "cause:scene"}  # the causes of lof, regions and background
    assert set(scores["detector"]) == set(FAST) | {"consensus"} | causes
    assert len(scores) == n * (len(FAST) + 1 + len(causes))
    assert scores["score_pct"].between(0, 1).all()
    # is_outlier follows the contamination (ties aside)
    share = scores.groupby("detector")["is_outlier"].mean()
    assert (share <= 0.06).all() and (share >= 0.03).all()
    assert len(clusters) == n and set(clusters["cluster"]) == {0, 1, 2}
    assert clusters[["map_x", "map_y"]].notna().all().all()
    assert len(neighbors) == n * 8
    assert (neighbors["frame_id"] != neighbors["neighbor_id"]).all()
    assert (
        neighbors.groupby("frame_id")["distance"].apply(lambda d: d.is_monotonic_increasing).all()
    )
    assert fitted is not None and fitted[1]["pyod"]
    # consensus combines the configured subset that ran (lof, iforest... are shown, not mixed in)
    # (dark is a one-sided check, side by side: the own-reference checks judge quality)
    assert run["params"]["consensus_of"] == ["lof", "regions", "background"]
    # the consensus is the sum of the junk causes' scores, recorded with the run as counted:
    # unset, every cause its detectors have (four days are too few for the scene cause's day
    # share, so it is counted)
    assert run["params"]["junk_causes"] == ["scene", "rarity"]
    assert run["params"]["cause_day_share"] == {"scene": None}
    assert run["params"]["causes_left_out"] == {}
    wide = scores.pivot(index="frame_id", columns="detector", values="score")
    np.testing.assert_allclose(wide["consensus"], wide["cause:rarity"] + wide["cause:scene"])
    # the run records each detector's facts for the dashboard, which cannot import the pipeline
    facts = run["params"]["detector_facts"]
    assert set(facts) == set(FAST) | {"consensus"} | causes
    assert facts["cause:scene"]["cause"] == "scene" and facts["background"]["cause"] == "scene"
    assert facts["lof"] == DETECTORS["lof"].facts() and facts["lof"]["family"] == "embedding"
    assert min(facts, key=lambda k: facts[k]["order"]) == "consensus"
    # planted anomalies are on top of the consensus
    cons = scores[scores["detector"] == "consensus"].set_index("frame_id")["score_pct"]
    assert cons.loc[data["anomalies"]].min() > cons.drop(data["anomalies"]).quantile(0.9)
    # the frame_facts view reads this run's consensus
    with store.connect(db, read_only=True) as con:
        facts = con.sql("SELECT count(consensus_pct) FROM frame_facts").fetchall()[0][0]
    assert facts == n


def test_junk_causes_choose_what_the_consensus_counts(tmp_path):
    """A user who does not count a cause (a building site: its diggers are the point) gets a
    consensus without it, the cause scores are written as before; a choice that leaves no
    consensus detector is refused in one line and the run is marked failed."""
    db = tmp_path / "store.duckdb"
    synthetic_store(db)
    result = analyze(db, fast_settings(junk_causes="scene"), progress=False)
    with store.connect(db, read_only=True) as con:
        run = sa.get_run(con, result.run_id)
        scores = sa.run_scores(con, result.run_id)
    assert run["params"]["junk_causes"] == ["scene"]
    wide = scores.pivot(index="frame_id", columns="detector", values="score")
    np.testing.assert_allclose(wide["consensus"], wide["cause:scene"])
    assert "cause:rarity" in wide
    with pytest.raises(AnalysisError, match="junk-causes"):
        analyze(db, fast_settings(junk_causes="camera"), progress=False)


def test_the_run_records_how_each_counted_cause_agrees_with_the_quality_cause(tmp_path):
    """Each cause's Spearman with the quality cause over the daylight frames is kept with the
    run (the dashboard reads it), and a counted cause at odds with it is named in the notes.
    Here `dark` (quality) and `background` (scene) both see the darker frames with a figure:
    they agree, and nothing is said."""
    from pipeline.detectors.consensus import AT_ODDS

    db = tmp_path / "store.duckdb"
    data = synthetic_store(db)
    settings = fast_settings(consensus_detectors=["dark", "lof", "background"])
    result = analyze(db, settings, progress=False)
    with store.connect(db, read_only=True) as con:
        params = sa.get_run(con, result.run_id)["params"]
        day = con.sql("SELECT count(*) FROM frames WHERE daylight = 'day'").fetchall()[0][0]
    assert 100 <= day < len(data["ids"])
    agreement = params["cause_agreement"]
    assert set(agreement) == {"rarity", "scene"}
    assert all(-1 <= r <= 1 for r in agreement.values())
    assert agreement["scene"] > AT_ODDS and params["causes_at_odds"] == {}
    assert not any("quality cause" in note for note in result.notes)


def test_unset_junk_causes_leave_out_a_scene_cause_that_says_what_kind_of_day_it_is(
    tmp_path, monkeypatch
):
    """With the junk causes unset, the run measures how much of the scene cause's daylight
    ranking lies between days (`cause_day_share`) and leaves the scene cause out from the
    gate: the consensus is then the sum of the other stored cause scores, the run records the
    causes it counted and the one it left out, and its notes say how to count it. A cause the
    user names is counted whatever its share. The gate is set at, then just above, this
    store's measured share."""
    from pipeline.detectors import consensus as consensus_module

    db = tmp_path / "store.duckdb"
    synthetic_store(db, n_days=16, per_day=24)

    def run(**changes):
        result = analyze(db, fast_settings(**changes), progress=False)
        with store.connect(db, read_only=True) as con:
            params = sa.get_run(con, result.run_id)["params"]
            scores = sa.run_scores(con, result.run_id)
        wide = scores.pivot(index="frame_id", columns="detector", values="score")
        return result, params, wide

    _, params, wide = run()
    share = params["cause_day_share"]["scene"]
    assert isinstance(share, float) and -1 < share < 1
    stored = [c for c in ("quality", "camera", "scene", "rarity") if f"cause:{c}" in wide]
    assert "scene" in stored and len(stored) >= 2

    monkeypatch.setattr(consensus_module, "DAY_SHARE_GATE", share)
    result, params, wide = run()
    counted = [c for c in stored if c != "scene"]
    assert params["junk_causes"] == counted
    assert params["causes_left_out"] == {"scene": share}
    np.testing.assert_allclose(
        wide["consensus"], wide[[f"cause:{c}" for c in counted]].sum(axis=1), rtol=1e-5
    )
    (note,) = [n for n in result.notes if n.startswith("the scene cause is left out")]
    assert note.endswith(f"--junk-causes {','.join([*counted, 'scene'])}")

    _, named, wide = run(junk_causes=",".join(stored))  # named: counted whatever its share
    assert named["junk_causes"] == stored and named["causes_left_out"] == {}
    np.testing.assert_allclose(
        wide["consensus"], wide[[f"cause:{c}" for c in stored]].sum(axis=1), rtol=1e-5
    )

    monkeypatch.setattr(consensus_module, "DAY_SHARE_GATE", share + 0.001)
    _, params, _ = run()
    assert params["junk_causes"] == stored and params["causes_left_out"] == {}


def test_run_parameters_record_the_stores_place(tmp_path):
    """`analyze` takes no place flags: the run's parameters say where the frames were placed
    (the store's place), not null; a place given in the settings is recorded as given."""
    db = tmp_path / "placed.duckdb"
    synthetic_store(db, n_days=2)
    with store.connect(db) as con:
        kv.put(con, "timezone", "Europe/London")
        kv.put(con, "lat", 51.454)
        kv.put(con, "lon", -0.978)
    first = analyze(db, fast_settings(), progress=False)
    second = analyze(db, fast_settings(timezone="Europe/Paris"), progress=False)
    with store.connect(db, read_only=True) as con:
        stored, given = (sa.get_run(con, r.run_id)["params"] for r in (first, second))
    assert (stored["timezone"], stored["lat"], stored["lon"]) == ("Europe/London", 51.454, -0.978)
    assert stored["clock_offset_minutes"] == 0  # nothing stored: the setting's own value
    assert given["timezone"] == "Europe/Paris" and given["lat"] == 51.454


def test_pca_dims_are_bounded_by_the_number_of_frames(tmp_path):
    db = tmp_path / "small.duckdb"
    synthetic_store(db, n_days=2, per_day=30, dim=128, n_anomalies=2)
    result = analyze(db, fast_settings(pca_variance=0.9999), progress=False)
    assert result.n_dims <= 60 // 5


def test_a_store_of_a_dozen_frames_is_judged_without_a_density(tmp_path):
    """Under 30 frames `lof` and `regions` have no neighbourhood that is not the whole archive:
    the run leaves them out and says why, and the consensus counts the quality cause alone."""
    db = tmp_path / "dozen.duckdb"
    synthetic_store(db, n_days=2, per_day=12, dim=32, n_anomalies=2)
    detectors = [*FAST, "soft", "flat", "exposure"]
    result = analyze(db, fast_settings(detectors=detectors), progress=False)
    skipped = " ".join(n for n in result.notes if "skipped" in n)
    assert "lof skipped" in skipped and "at least 30 frames" in skipped
    with store.connect(db, read_only=True) as con:
        scored = {
            d
            for (d,) in con.execute(
                "SELECT DISTINCT detector FROM outlier_scores WHERE run_id = ?", [result.run_id]
            ).fetchall()
        }
        params = sa.get_run(con, result.run_id)["params"]
    assert "lof" not in scored and "consensus" in scored and "cause:rarity" not in scored
    assert "lof" not in params["consensus_of"]


def test_run_parameters_record_the_neighbour_index_and_its_recall(tmp_path):
    """An exact index finds every neighbour (recall 1.0, no sample); an approximate one records
    the recall measured against exact search on a sample, and the lists it probes for it."""
    db = tmp_path / "recall.duckdb"
    synthetic_store(db, n_days=4, per_day=72, dim=32)
    runs = [
        analyze(db, fast_settings(neighbor_index=kind, detectors=["lof", "knn"]), progress=False)
        for kind in ("auto", "ivf")
    ]
    with store.connect(db, read_only=True) as con:
        exact, ivf = (sa.get_run(con, r.run_id)["params"] for r in runs)
    assert (
        exact["neighbor_index"],
        exact["neighbor_recall"],
        exact["neighbor_recall_frames"],
        exact["neighbor_nprobe"],
    ) == ("exact", 1.0, 0, None)
    assert ivf["neighbor_index"] == "ivf" and ivf["neighbor_recall_frames"] == 288
    assert 0.95 <= ivf["neighbor_recall"] <= 1.0 and ivf["neighbor_nprobe"] >= 1


def test_pca_is_fitted_on_a_sample_and_every_frame_is_projected(tmp_path, monkeypatch):
    """Above `pca_fit_frames` the standardisation and PCA see a seeded sample only, and every
    frame, read from the store a batch at a time, lands at its own projection."""
    import pickle

    from pipeline import analyze as analyze_module

    db = tmp_path / "sampled.duckdb"
    data = synthetic_store(db, n_days=4, per_day=72, dim=48)
    monkeypatch.setattr(analyze_module, "PROJECT_BATCH_BYTES", 8 * 48 * 50)  # 50 rows a batch
    with store.connect(db) as con:  # stored out of frame order, as re-embeds leave them
        con.execute("CREATE TABLE _e AS SELECT * FROM embeddings ORDER BY frame_id DESC")
        con.execute("DELETE FROM embeddings")
        con.execute("INSERT INTO embeddings SELECT * FROM _e")
        con.execute("DROP TABLE _e")
    result = analyze(
        db, fast_settings(pca_fit_frames=100, detectors=["lof", "dark"]), progress=False
    )
    with store.connect(db, read_only=True) as con:
        fitted = pickle.loads(sa.load_fitted(con, result.run_id)[0])
        clusters = sa.run_clusters(con, result.run_id)
    assert fitted.scaler.n_samples_seen_ == 100 and fitted.pca.n_samples_ == 100
    expected = fitted.transform(data["vectors"].astype(np.float32))
    np.testing.assert_allclose(
        clusters[["map_x", "map_y"]].to_numpy(), expected[:, :2], rtol=1e-5, atol=1e-5
    )
    assert len(clusters) == len(data["ids"])


def test_vectors_with_nan_fail_the_run_and_say_how_many(tmp_path):
    """A NaN vector outside the fit sample is found while streaming: every one is counted, the
    run is marked failed with no rows, and the message says how to re-embed."""
    db = tmp_path / "nan.duckdb"
    synthetic_store(db, n_days=2, per_day=72, dim=16, n_anomalies=2)
    with store.connect(db) as con:
        con.execute(
            "UPDATE embeddings SET vector = list_transform(vector, lambda x: x / 0.0) "
            "WHERE frame_id IN (5, 77, 140)"
        )
    with pytest.raises(AnalysisError, match=r"^3 fake vectors contain NaN or infinity.*--replace"):
        analyze(db, fast_settings(pca_fit_frames=100, detectors=["lof"]), progress=False)
    with pytest.raises(AnalysisError, match=r"of 144 sampled fake vectors contain NaN"):
        analyze(db, fast_settings(detectors=["lof"]), progress=False)
    with store.connect(db, read_only=True) as con:
        statuses = con.sql("SELECT status FROM analysis_runs").fetchall()
        rows = con.sql("SELECT count(*) FROM outlier_scores").fetchall()[0][0]
    assert statuses == [("failed",), ("failed",)] and rows == 0


def test_pca_fit_frames_must_be_a_real_sample(tmp_path):
    db = tmp_path / "tiny.duckdb"
    synthetic_store(db, n_days=2, per_day=30, n_anomalies=2)
    with pytest.raises(InputError, match="pca_fit_frames"):
        analyze(db, fast_settings(pca_fit_frames=5), progress=False)


def test_auto_k_and_hdbscan(tmp_path):
    db = tmp_path / "k.duckdb"
    synthetic_store(db)
    auto = analyze(db, fast_settings(n_clusters="auto", detectors=["iforest"]), progress=False)
    assert 2 <= auto.n_clusters <= 12
    hd = analyze(db, fast_settings(clusterer="hdbscan", detectors=["iforest"]), progress=False)
    with store.connect(db, read_only=True) as con:
        labels = sa.run_clusters(con, hd.run_id)["cluster"]
    assert labels.min() >= -1 and hd.n_clusters >= 1


def test_a_model_without_vectors_says_whether_it_exists(tmp_path):
    db = tmp_path / "k.duckdb"
    synthetic_store(db, n_days=2, per_day=30, n_anomalies=2)
    with pytest.raises(InputError, match="unknown model 'bogus'; known models: "):
        analyze(db, fast_settings(model="bogus"), progress=False)
    with pytest.raises(
        AnalysisError,
        match=r"no pixels embeddings in .* \(embedded models: fake \(60 frames\)\); run "
        r"`python -m pipeline embed --db .* --model pixels` first",
    ):
        analyze(db, fast_settings(model="pixels"), progress=False)


def test_more_clusters_than_frames_makes_one_per_distinct_frame_and_says_so(tmp_path):
    import warnings

    db = tmp_path / "k.duckdb"
    synthetic_store(db, n_days=2, per_day=30, n_anomalies=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k-means warned of fewer distinct points than clusters
        result = analyze(
            db, fast_settings(n_clusters="100000", detectors=["iforest"]), progress=False
        )
    with store.connect(db, read_only=True) as con:
        labels = sa.run_clusters(con, result.run_id)["cluster"]
    assert result.n_clusters == labels.nunique() == 60
    assert "100000 clusters were asked for and 60 made: the 60 frames have 60 distinct" in (
        " ".join(result.notes)
    )


def test_deterministic_with_random_state(tmp_path):
    db = tmp_path / "d.duckdb"
    synthetic_store(db)
    a = analyze(db, fast_settings(), progress=False)
    b = analyze(db, fast_settings(), progress=False)
    with store.connect(db, read_only=True) as con:
        sa_, sb = sa.run_scores(con, a.run_id), sa.run_scores(con, b.run_id)
    np.testing.assert_allclose(sa_["score"].to_numpy(), sb["score"].to_numpy(), rtol=1e-6)


def test_failure_mid_write_leaves_failed_run_and_no_rows(tmp_path, monkeypatch):
    db = tmp_path / "f.duckdb"
    synthetic_store(db)

    def boom(con, rows):  # clusters and scores are already inserted in the transaction
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sa, "insert_neighbors", boom)
    with pytest.raises(Exception, match="disk on fire"):
        analyze(db, fast_settings(), progress=False)
    with store.connect(db, read_only=True) as con:
        runs = con.sql("SELECT run_id, status, error FROM analysis_runs").fetchall()
        counts = [
            con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("clusters", "outlier_scores", "neighbors", "fitted_runs")
        ]
    assert len(runs) == 1 and runs[0][1] == "failed" and "disk on fire" in runs[0][2]
    assert counts == [0, 0, 0, 0]


def test_failure_in_a_detector_marks_the_run_failed(tmp_path, monkeypatch):
    db = tmp_path / "g.duckdb"
    synthetic_store(db)
    monkeypatch.setattr(
        DETECTORS["hbos"], "_fit", lambda self, batch: (_ for _ in ()).throw(ValueError("bad bins"))
    )
    with pytest.raises(Exception, match="bad bins"):
        analyze(db, fast_settings(), progress=False)
    with store.connect(db, read_only=True) as con:
        assert con.sql("SELECT status FROM analysis_runs").fetchall() == [("failed",)]
        assert con.sql("SELECT count(*) FROM outlier_scores").fetchall() == [(0,)]


def test_same_time_needs_two_days(tmp_path):
    db = tmp_path / "one_day.duckdb"
    synthetic_store(db, n_days=1, per_day=72, n_anomalies=0)
    result = analyze(db, fast_settings(), progress=False)
    assert "same_time" not in result.detectors
    assert any("same_time skipped" in note and "at least two days" in note for note in result.notes)


def test_cli_analyze_without_embeddings_is_one_line(tmp_path):
    db = tmp_path / "empty.duckdb"
    with store.connect(db):
        pass
    out = CliRunner().invoke(cli, ["analyze", "--db", str(db), "--quiet"])
    assert out.exit_code == 1
    assert out.output.startswith("error: no vgg16-hed-grid embeddings")
    assert "pipeline embed" in out.output and "Traceback" not in out.output


def test_cli_analyze_unknown_detector(tmp_path):
    db = tmp_path / "u.duckdb"
    synthetic_store(db)
    out = CliRunner().invoke(cli, ["analyze", "--db", str(db), "--detectors", "iforest,nope"])
    assert out.exit_code == 1 and "unknown detector(s) nope" in out.output


def test_cli_analyze_writes_a_run(tmp_path):
    db = tmp_path / "c.duckdb"
    synthetic_store(db)
    out = CliRunner().invoke(
        cli,
        ["analyze", "--db", str(db), "--quiet", "--detectors", "iforest,lof", "--n-clusters", "4"],
    )
    assert out.exit_code == 0, out.output
    assert "analysis run 1 (fake): 288 frames" in out.output  # the only embedded model
    with store.connect(db, read_only=True) as con:
        run = sa.get_run(con, 1)
    assert run["status"] == "complete" and run["params"]["n_clusters"] == "4"
    assert json.loads(json.dumps(run["params"]))["detectors"] == ["iforest", "lof"]


def test_pixel_detectors_fit_side_by_side_as_they_would_one_after_the_other(tmp_path):
    """`alignment` and `background` fit side by side in threads: each scores every frame as it
    does fitted alone, bit for bit; each step keeps its own wall clock and their CPU is one
    step; the mosaic fills from the first one's grids (`alignment`'s), so it is the one a run
    of `alignment` alone draws."""
    from store import facts

    db = tmp_path / "side.duckdb"
    synthetic_store(db)
    both = analyze(db, fast_settings(detectors=["lof", "alignment", "background"]), False)
    alone = {
        key: analyze(db, fast_settings(detectors=["lof", key]), False)
        for key in ("alignment", "background")
    }
    with store.connect(db, read_only=True) as con:
        together = sa.run_scores(con, both.run_id).set_index(["detector", "frame_id"])["score"]
        for key, result in alone.items():
            scores = sa.run_scores(con, result.run_id).set_index(["detector", "frame_id"])
            got, want = together.loc[key].sort_index(), scores["score"].loc[key].sort_index()
            assert np.isfinite(want).sum() > 200, key
            np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(), err_msg=key)
        run = sa.get_run(con, both.run_id)
        assert (
            facts.mosaic(con, both.run_id)["png"]
            == (facts.mosaic(con, alone["alignment"].run_id)["png"])
        )
    assert {"pixel detectors", "detector:alignment", "detector:background"} <= set(run["timings"])
    assert "detector:alignment" not in both.cpu and both.cpu["pixel detectors"] > 0


def test_a_pixel_detector_failing_side_by_side_fails_the_run_and_stops_the_other(
    tmp_path, monkeypatch
):
    """`alignment` fails once `background` has begun: the run fails with alignment's error,
    and background gives up before its next chunk of thumbnails instead of running on."""
    import threading

    from pipeline import analyze as analyze_module
    from pipeline.pixels import ReadStopped

    db = tmp_path / "fails.duckdb"
    synthetic_store(db)
    monkeypatch.setattr(analyze_module, "PIXEL_CHUNK", 8)  # 36 chunks a pass
    begun, ended = threading.Event(), []
    background_fit = DETECTORS["background"].fit

    def watched(self, batch):
        begun.set()
        try:
            return background_fit(self, batch)
        except BaseException as exc:
            ended.append(exc)
            raise

    def fails(self, batch):
        assert begun.wait(60)
        raise ValueError("lens cap on")

    monkeypatch.setattr(DETECTORS["background"], "fit", watched)
    monkeypatch.setattr(DETECTORS["alignment"], "_fit", fails)
    with pytest.raises(AnalysisError, match="lens cap on"):
        analyze(db, fast_settings(detectors=["lof", "alignment", "background"]), False)
    assert len(ended) == 1 and isinstance(ended[0], ReadStopped)
    with store.connect(db, read_only=True) as con:
        assert con.sql("SELECT status FROM analysis_runs").fetchall() == [("failed",)]


def test_a_stoppable_reader_stops_before_its_next_chunk():
    import threading

    from pipeline.pixels import ArrayReader, ReadStopped, StoppableReader

    images = {i: np.full((36, 64, 3), i, np.uint8) for i in range(1, 6)}
    stop = threading.Event()
    reader = StoppableReader(ArrayReader(images), stop)
    assert reader.aspect(np.arange(1, 6)) == 64 / 36
    [(pos, grids)] = list(reader.grids(np.arange(1, 6), (32, 18)))
    assert list(pos) == [0, 1, 2, 3, 4] and grids.shape == (5, 18, 32, 3)
    stop.set()
    with pytest.raises(ReadStopped):
        list(reader.grids(np.arange(1, 6), (32, 18)))


def _review(db: Path, junk, keep) -> None:
    from store import reviews

    with store.connect(db) as con:
        reviews.set_verdicts(con, [int(i) for i in junk], "junk")
        reviews.set_verdicts(con, [int(i) for i in keep], "keep")


def test_analyze_learns_from_the_reviews_of_the_runs_frames(tmp_path):
    """A user for whom the night frames are junk and the planted figures are not (their
    garden's visitors): `learned` is written for every frame, ranks the night frames they did
    not review higher than the consensus does and the planted figure they did not review
    lower, and the run records what it learned from."""
    db = tmp_path / "store.duckdb"
    data = synthetic_store(db)
    with store.connect(db, read_only=True) as con:
        night = con.sql("SELECT frame_id FROM frames WHERE daylight = 'night' ORDER BY 1").df()
    night = night["frame_id"].to_numpy()
    planted = data["anomalies"]
    ordinary = np.setdiff1d(data["ids"], np.concatenate([night, planted]))
    _review(db, junk=night[::12][:8], keep=np.concatenate([planted[:5], ordinary[::10][:10]]))
    result = analyze(db, fast_settings(), progress=False)
    assert result.detectors[-2:] == ["consensus", "learned"]
    with store.connect(db, read_only=True) as con:
        run = sa.get_run(con, result.run_id)
        scores = sa.run_scores(con, result.run_id)
    pct = scores.pivot(index="frame_id", columns="detector", values="score_pct")
    assert pct["learned"].notna().sum() == len(data["ids"])
    learned = run["params"]["learned"]
    assert (learned["n_junk"], learned["n_keep"]) == (8, 15)
    assert set(learned["weights"]) == set(FAST) and learned["model_weight"] > 0
    assert run["params"]["detector_facts"]["learned"]["family"] == "learned"
    assert any(n.startswith("learned from your reviews (8 junk, 15 keep)") for n in result.notes)
    rest_night = np.setdiff1d(night, night[::12][:8])
    assert pct.loc[rest_night, "learned"].mean() > pct.loc[rest_night, "consensus"].mean() + 0.1
    assert pct.loc[planted[5], "learned"] < pct.loc[planted[5], "consensus"]


def test_too_few_reviews_are_not_learned_from_and_the_notes_say_how_many(tmp_path):
    db = tmp_path / "store.duckdb"
    data = synthetic_store(db)
    _review(db, junk=data["anomalies"][:4], keep=data["ids"][:10])
    result = analyze(db, fast_settings(), progress=False)
    assert "learned" not in result.detectors
    assert any(
        "4 of the run's frames are reviewed junk and 10 keep; it needs at least 5 of each" in n
        for n in result.notes
    )
    with store.connect(db, read_only=True) as con:
        assert "learned" not in set(sa.run_scores(con, result.run_id)["detector"])
        assert sa.get_run(con, result.run_id)["params"]["learned"] is None
    fewer = analyze(db, fast_settings(learn_min_reviews=4), progress=False)
    assert "learned" in fewer.detectors


def test_cli_analyze_no_learn_leaves_the_reviews_alone(tmp_path):
    db = tmp_path / "store.duckdb"
    data = synthetic_store(db)
    _review(db, junk=data["anomalies"][:5], keep=data["ids"][:10])
    out = CliRunner().invoke(
        cli, ["analyze", "--db", str(db), "--quiet", "--detectors", "lof,dark", "--no-learn"]
    )
    assert out.exit_code == 0, out.output
    assert "learned" not in out.output
    with store.connect(db, read_only=True) as con:
        run = sa.get_run(con, 1)
        assert "learned" not in set(sa.run_scores(con, 1)["detector"])
    assert run["params"]["learn_from_reviews"] is False and run["params"]["learned"] is None
    out = CliRunner().invoke(
        cli, ["analyze", "--db", str(db), "--quiet", "--detectors", "lof,dark"]
    )
    assert out.exit_code == 0 and "learned from your reviews (5 junk, 10 keep)" in out.output
