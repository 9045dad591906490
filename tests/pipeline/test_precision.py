"""Precision: the setting, how `auto` chooses (and keeps its answer), and the same answers at
float32 and bfloat16: the vectors, the junk `analyze` finds, a store that mixes them, and
`score-new` at the run's precision.

Bounds, measured (docs/PERFORMANCE.md, "Precision"; `bench/precision.py --variants demo`):
vgg16-hed-grid at bfloat16 against float32 on the same 1,196 demo frames gave cosine >= 0.99997
and a relative L2 error of 0.30% median, 0.81% largest; the tests allow cosine >= 0.9999,
median 1%, largest 2% (the 48 frames here are fewer, so their extremes vary more).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import store
from pipeline.analyze import analyze
from pipeline.cli import cli
from pipeline.embed import embed_frames
from pipeline.errors import InputError
from pipeline.evaluate import evaluate
from pipeline.info import describe_store
from pipeline.ingest import ingest_folder
from pipeline.models import get_model, precision
from pipeline.models.precision import build_model
from pipeline.onepass import ingest_and_embed
from pipeline.runner import import_ground_truth
from pipeline.score_new import load_fitted_run, run_precision, score_new
from pipeline.settings import Settings
from store import embeddings as se
from tests.conftest import write_jpeg

# One xdist worker runs them all (`make test`), so the module's `stores` (about a minute and a
# half of embedding) is built once, not once on every worker that gets one of its tests.
pytestmark = pytest.mark.xdist_group("precision")

MODEL = "vgg16-hed-grid"
COSINE_MIN = 0.9999
REL_ERROR_MEDIAN = 0.01
REL_ERROR_MAX = 0.02


def test_the_setting_takes_the_precisions_and_nothing_else(tmp_path):
    assert Settings().precision == "auto"
    with pytest.raises(
        InputError, match="precision must be one of auto, float32, bfloat16, float16, not 'int4'"
    ):
        Settings(precision="int4")
    runner = CliRunner()
    for command in ("embed", "run", "score-new", "serve", "watch"):
        shown = runner.invoke(cli, [command, "--help"])
        assert "--precision [auto|float32|bfloat16|float16]" in shown.output, command
    toml = tmp_path / "s.toml"
    toml.write_text('precision = "float64"\n')
    refused = runner.invoke(cli, ["--config", str(toml), "embed", "--db", str(toml)])
    assert refused.exit_code == 1 and "precision must be one of" in refused.output


def test_a_family_that_runs_at_float32_only_gets_float32_without_a_check():
    spec = get_model("pixels")
    embedder, choice = build_model(spec, None, "auto")
    assert (embedder.precision, choice.precision) == ("float32", "float32")
    assert choice.describe() == "float32 (auto: pixels runs at float32 only)"
    with pytest.raises(InputError, match="pixels runs at float32 only, not bfloat16"):
        build_model(spec, None, "bfloat16")


@pytest.mark.keras
def test_a_cpu_without_bfloat16_units_stays_at_float32(monkeypatch, tmp_path):
    """`auto` reads the CPU's flags; a CPU without AVX512-BF16 or AMX gets float32, unmeasured.
    (The flags are the one thing a test cannot change on the machine it runs on.)"""
    from pipeline.models.keras_setup import gpus

    monkeypatch.setenv("TIMELAPSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512f", "fma"})
    assert precision.bf16_units() == []
    assert not gpus(), "on a machine with a GPU, auto picks float16 (test_float16_is_for_gpus)"
    embedder, choice = build_model(get_model("vgg16-hed"), None, "auto")
    assert (embedder.precision, choice.reason) == (
        "float32",
        "auto: this CPU has no AMX-BF16 or AVX512-BF16 units",
    )
    assert not (tmp_path / "precision.json").exists()


@pytest.mark.keras
def test_auto_measures_once_per_machine_and_model_and_keeps_the_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("TIMELAPSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "CHECK_FRAMES", 2)  # the mechanism, not the timing, is tested
    spec = get_model("vgg16-hed")
    calls = []

    def sample():
        calls.append(1)
        return np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)

    embedder, choice = build_model(spec, None, "auto", sample)
    if not precision.bf16_units():  # a CPU without the units: float32, nothing measured
        assert choice.precision == "float32" and not calls
        return
    assert calls == [1] and "measured now: bfloat16" in choice.reason
    entry = next(iter(json.loads((tmp_path / "precision.json").read_text()).values()))
    assert entry["precision"] == choice.precision == embedder.precision
    assert entry["speedup"] == pytest.approx(entry["bfloat16_fps"] / entry["float32_fps"], rel=0.01)
    assert (entry["precision"] == "bfloat16") == (entry["speedup"] >= precision.MIN_SPEEDUP)

    again, choice = build_model(spec, None, "auto", sample)
    assert calls == [1] and "cached in" in choice.reason  # kept: not measured again
    assert again.precision == entry["precision"]
    # the kept answer is what counts: one that says float32 gives float32
    path = tmp_path / "precision.json"
    data = json.loads(path.read_text())
    for value in data.values():
        value["precision"], value["speedup"] = "float32", 1.01
    path.write_text(json.dumps(data))
    assert build_model(spec, None, "auto", sample)[0].precision == "float32"


@pytest.mark.keras
def test_float16_is_for_gpus():
    from pipeline.models.keras_setup import gpus

    if gpus():
        assert build_model(get_model("vgg16-hed"), None, "float16")[0].precision == "float16"
    else:
        with pytest.raises(InputError, match="float16 is for GPUs and the Keras backend sees none"):
            build_model(get_model("vgg16-hed"), None, "float16")


# --- the same answers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A 48-frame demo render; `float32`: ingest then embed at float32; `bfloat16`: `run`'s one
    pass at bfloat16; `mixed`: the float32 store whose later half was embedded again at
    bfloat16 by `embed` (an upgrade mid-way). Each is analysed."""
    from pipeline.demo import render_demo

    base = tmp_path_factory.mktemp("precision")
    rendered = render_demo(base / "demo", n_frames=48, seed=7, progress=False)
    settings = Settings(model=MODEL, batch_size=16, workers=2)
    dbs = {name: base / f"{name}.duckdb" for name in ("float32", "bfloat16")}
    ingest_folder(rendered.frames_dir, dbs["float32"], settings, progress=False)
    embed_frames(dbs["float32"], settings.replace(precision="float32"), progress=False)
    ingest_and_embed(
        rendered.frames_dir, dbs["bfloat16"], settings.replace(precision="bfloat16"), progress=False
    )
    dbs["mixed"] = base / "mixed.duckdb"
    shutil.copy(dbs["float32"], dbs["mixed"])
    with store.connect(dbs["mixed"]) as con:
        ids = se.vector_ids(con, MODEL)
        con.execute("DELETE FROM embeddings WHERE frame_id > ?", [int(ids[len(ids) // 2 - 1])])
    mixed_embed = embed_frames(dbs["mixed"], settings.replace(precision="bfloat16"), progress=False)
    results = {}
    for name, db in dbs.items():
        import_ground_truth(db, rendered.truth_csv, rendered.frames_dir)
        results[name] = analyze(db, settings, progress=False)
    return dbs, results, mixed_embed, rendered


def _vectors(db):
    with store.connect(db, read_only=True) as con:
        return se.load_vectors(con, MODEL)


def _consensus(db) -> dict:
    with store.connect(db, read_only=True) as con:
        rows = con.sql(
            "SELECT frame_id, score_pct, is_outlier FROM outlier_scores "
            "WHERE detector = 'consensus'"
        ).fetchall()
    return {frame_id: (pct, flag) for frame_id, pct, flag in rows}


def _day_auc(db) -> float:
    table = evaluate(db, None)
    row = table[
        (table["detector"] == "consensus") & (table["subset"] == "day") & (table["kind"] == "all")
    ]
    return float(row["roc_auc"].iloc[0])


@pytest.mark.keras
def test_bfloat16_vectors_are_float32_vectors_within_the_measured_bounds(stores):
    dbs, *_ = stores
    ids_a, a = _vectors(dbs["float32"])
    ids_b, b = _vectors(dbs["bfloat16"])
    np.testing.assert_array_equal(ids_a, ids_b)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    error = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    assert cosine.min() >= COSINE_MIN
    assert np.median(error) <= REL_ERROR_MEDIAN and error.max() <= REL_ERROR_MAX
    assert error.min() > 0  # they are other numbers: the bfloat16 path really ran
    with store.connect(dbs["bfloat16"], read_only=True) as con:
        assert se.precision_counts(con, MODEL) == {"bfloat16": len(ids_b)}
        assert se.get_model_row(con, MODEL).precision == "bfloat16"


@pytest.mark.keras
def test_the_one_pass_gives_the_two_pass_vectors(stores):
    """The later half of the frames at bfloat16 twice: by `run`'s one pass (`bfloat16`) and by
    `embed` after `ingest` (`mixed`). Same pixels in, same model: the same vectors to float
    rounding (the batches are cut differently)."""
    dbs, *_ = stores
    ids_one, one = _vectors(dbs["bfloat16"])
    ids_two, two = _vectors(dbs["mixed"])
    with store.connect(dbs["mixed"], read_only=True) as con:
        later = con.sql(
            "SELECT frame_id FROM embeddings WHERE precision = 'bfloat16' ORDER BY frame_id"
        ).fetchnumpy()["frame_id"]
    assert len(later) >= 20
    np.testing.assert_allclose(
        two[np.isin(ids_two, later)],
        one[np.isin(ids_one, later)],
        rtol=1e-5,
        atol=1e-5 * float(np.abs(one).max()),
    )


@pytest.mark.keras
def test_analyze_finds_the_same_junk_at_either_precision_and_in_a_mixed_store(stores):
    dbs, results, mixed_embed, _ = stores
    reference = _consensus(dbs["float32"])
    auc = _day_auc(dbs["float32"])
    for name in ("bfloat16", "mixed"):
        other = _consensus(dbs[name])
        assert other.keys() == reference.keys()
        assert abs(_day_auc(dbs[name]) - auc) <= 0.02, name
        flagged = {f for f, (_, flag) in reference.items() if flag}
        flagged_other = {f for f, (_, flag) in other.items() if flag}
        assert len(flagged & flagged_other) >= 0.75 * len(flagged | flagged_other), name
        pct = np.array([[reference[f][0], other[f][0]] for f in reference])
        assert np.corrcoef(pct.T)[0, 1] >= 0.98, name

    n = len(reference)
    assert (
        "note: the store's vgg16-hed-grid vectors are of two precisions now"
        in mixed_embed.describe()
    )
    assert results["mixed"].params["vector_precisions"] == {
        "float32": n // 2,
        "bfloat16": n - n // 2,
    }
    assert any("vectors are of two precisions" in note for note in results["mixed"].notes)
    # most first, a tie by name
    assert f"mixed precision: {n - n // 2} bfloat16 + {n // 2} float32" in describe_store(
        dbs["mixed"]
    )
    assert f"{MODEL} (4608-d, {n} vectors, bfloat16)" in describe_store(dbs["bfloat16"])
    assert results["bfloat16"].params["vector_precisions"] == {"bfloat16": n}


@pytest.mark.keras
def test_score_new_embeds_at_the_precision_of_the_run(stores, tmp_path):
    dbs, *_ = stores
    db = tmp_path / "bf16.duckdb"
    shutil.copy(dbs["bfloat16"], db)
    fitted, _ = load_fitted_run(db)
    assert run_precision(db, fitted).precision == "bfloat16"
    assert run_precision(db, fitted, "float32").precision == "float32"
    new = tmp_path / "new"
    for i in range(2):
        write_jpeg(new / f"n_{i}.jpg", size=(640, 360), seed=40 + i)
    result = score_new(new, db, Settings(), progress=False)
    assert len(result.frames) == 2
    assert "embedded at bfloat16 (auto: the precision of run" in result.describe()
    with store.connect(db, read_only=True) as con:
        assert se.precision_counts(con, MODEL) == {
            "bfloat16": len(_vectors(dbs["bfloat16"])[0]) + 2
        }

    new_again = tmp_path / "new-again"
    write_jpeg(new_again / "n_9.jpg", size=(640, 360), seed=49)
    score_new(new_again, db, Settings(precision="float32"), progress=False)
    with store.connect(db, read_only=True) as con:
        assert se.precision_counts(con, MODEL)["float32"] == 1  # asked for: float32


@pytest.mark.keras
def test_serve_and_watch_embed_at_the_precision_of_the_run(stores, tmp_path):
    """`serve` builds the run's model at the run's vectors' precision (unless told otherwise)
    and says so on /v1/health; `watch` embeds new frames at it, with one model for its passes."""
    from pipeline.serve.scorer import Scorer
    from pipeline.watch import Watcher

    dbs, *_ = stores
    db = tmp_path / "bf16.duckdb"
    shutil.copy(dbs["bfloat16"], db)
    scorer = Scorer(db, Settings())
    scorer.refresh()
    assert scorer.run().embedder.precision == "bfloat16"
    asked = Scorer(db, Settings(precision="float32"))
    asked.refresh()
    assert asked.run().embedder.precision == "float32"

    camera = tmp_path / "camera"
    write_jpeg(camera / "w_0.jpg", size=(640, 360), seed=60)
    watcher = Watcher(camera, db, Settings())
    first = watcher.one_pass()
    assert first.n_scored == 1, first.line()
    model = watcher.model[0]
    write_jpeg(camera / "w_1.jpg", size=(640, 360), seed=61)
    assert watcher.one_pass().n_scored == 1
    assert watcher.model[0] is model  # built once, kept between passes
    n = len(_vectors(dbs["bfloat16"])[0])
    with store.connect(db, read_only=True) as con:
        assert se.precision_counts(con, MODEL) == {"bfloat16": n + 2}
