"""Every detector's scores on a small fixed demo equal the recorded ones (a regression guard).

`tests/data/golden_scores.csv.gz` holds, per frame of a 240-frame demo render (seed 7,
160 x 90 px, embedded with the fast `pixels` model and analysed with the default settings),
its cluster and 2-D map position and, per detector and the consensus, its score, score_pct and
is_outlier. Frames are keyed by path, since frame ids may change. The file was written by the
code before the detectors were restructured; a change that moves code must leave every number
where it was. Regenerate it only for a change that is meant to change scores (and say so in
its commit): `.venv/bin/python -m tests.pipeline.test_golden_scores --write`. When percentiles
began to rank the frames tied at a scorer's lowest score as the lowest (`Scorer.percentile`),
the score_pct columns were derived again from the recorded scores (the old rule gives the old
columns exactly; every other column is unchanged). It was written again on 2026-12-05, when
`background` moved to a 64-pixel grid and a refit while a few frames own a component, on an
AVX2-only AMD EPYC (`RECORDED_ON`; elsewhere the scores are compared as rankings), and once
more that day when `alignment`'s zoom became two taps a point instead of BLAS's matrix
products (its scores moved by at most 1.3e-8; every other column stayed as it was). When the
`regions` detector joined the same day, its columns were derived from the recorded `lof` ones:
a `pixels` run is one region, so its score is the share of the fit's `lof` scores at or below
the frame's, and its percentile and flags are `lof`'s; every other column is unchanged. When
`exposure`'s evidence began at its 97th percentile instead of its 95th (2026-12-06), the
`cause:quality` and `consensus` scores were derived from the recorded ones: each less the
frame's `exposure` evidence counted from the 95th and plus it counted from the 97th (every
frame above the 95th had counted it: its quality score is at least that evidence), their
percentiles and flags from those scores as `Scorer` ranks them (which gives the recorded
columns from the recorded scores exactly); every other column is unchanged. When `soft_cells`
joined the consensus (2026-12-06) the file was written again in full, on an AMD EPYC with
AVX-512 (`RECORDED_ON` "avx512"): its new columns and the `cause:quality` and `consensus` ones
it moves cannot be derived from the recorded columns, and on that machine's kind the renders
differ by a few pixels from the AVX2 recording, so every detector's columns moved by as much
as `tests/cpu.py` describes between two kinds (`background` up to 0.13 of its score, 6 of 240
ranks), and no more. When `soft`'s reference became half its pool's and half its daylight
class's (2026-12-07) it was written again in full, on an AMD EPYC whose OpenBLAS runs its
Haswell kernels (`RECORDED_ON` "avx512-blas-haswell"): against the AVX-512 recording `soft`'s
scores moved by up to 2% of their range (Spearman 0.89 over the 239 frames), `cause:quality`'s
and the consensus's with them (0.999, 0.997), `background` by 0.2% and `flat` by 4e-6 (the
machine's kind), and no other column.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cpu import assert_flags_agree, assert_same_ranking, same_kind_as_recorded

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_scores.csv.gz"
N_FRAMES, SEED, SIZE = 240, 7, (160, 90)
# Measured: two runs on one machine agree exactly; the tolerance only leaves room for another
# BLAS or CPU summing in another order (scores are float64 of float32 PCA points). On a CPU of
# another kind than the recording's the renders differ by a few pixels: rankings then
# (tests/cpu.py).
RTOL, ATOL = 1e-9, 1e-12
RECORDED_ON = "avx512-blas-haswell"  # `tests.cpu.cpu_kind` of the machine that wrote GOLDEN


def produce(out: Path) -> pd.DataFrame:
    """Render the demo into `out`, run ingest, embed (`pixels`) and analyze; one row per frame."""
    import store
    from pipeline.analyze import analyze
    from pipeline.demo import DEMO_PLACE, render_demo
    from pipeline.embed import embed_frames
    from pipeline.ingest import ingest_folder
    from pipeline.settings import Settings

    demo = render_demo(out / "demo", n_frames=N_FRAMES, seed=SEED, size=SIZE, progress=False)
    db = out / "golden.duckdb"
    settings = Settings(
        timezone=DEMO_PLACE.timezone, lat=DEMO_PLACE.lat, lon=DEMO_PLACE.lon, model="pixels"
    )
    ingest_folder(demo.frames_dir, db, settings, progress=False)
    embed_frames(db, settings, progress=False)
    run_id = analyze(db, settings, progress=False).run_id
    with store.connect(db, read_only=True) as con:
        clusters = con.execute(
            "SELECT f.path, c.cluster, c.map_x, c.map_y FROM clusters c JOIN frames f "
            "USING (frame_id) WHERE c.run_id = ? ORDER BY f.path",
            [run_id],
        ).df()
        scores = con.execute(
            "SELECT f.path, o.detector, o.score, o.score_pct, o.is_outlier "
            "FROM outlier_scores o JOIN frames f USING (frame_id) WHERE o.run_id = ?",
            [run_id],
        ).df()
    wide = scores.pivot(
        index="path", columns="detector", values=["score", "score_pct", "is_outlier"]
    )
    wide.columns = [f"{detector}:{value}" for value, detector in wide.columns]
    wide = wide[sorted(wide.columns)].reset_index()
    return clusters.merge(wide, on="path", how="outer", validate="one_to_one")


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> pd.DataFrame:
    return produce(tmp_path_factory.mktemp("golden"))


def test_every_detector_scores_as_recorded(produced):
    golden = pd.read_csv(GOLDEN)
    assert list(produced["path"]) == list(golden["path"])
    assert set(produced.columns) == set(golden.columns)
    if not same_kind_as_recorded(RECORDED_ON):  # recorded on another kind: see tests/cpu.py
        assert (produced["cluster"] == golden["cluster"]).mean() >= 0.95
        for column in golden.columns.drop(["path", "cluster"]):
            got, want = produced[column], golden[column]
            if column.endswith(":is_outlier"):
                assert_flags_agree(got, want, column)
            else:
                assert_same_ranking(got, want, column)
                if column.endswith(":score_pct"):
                    np.testing.assert_allclose(
                        got.astype(float), want.astype(float), rtol=0, atol=0.05, err_msg=column
                    )
        return
    np.testing.assert_array_equal(produced["cluster"], golden["cluster"])
    for column in golden.columns.drop(["path", "cluster"]):
        got, want = produced[column], golden[column]
        if column.endswith(":is_outlier"):
            np.testing.assert_array_equal(got.astype(bool), want.astype(bool), err_msg=column)
        else:
            np.testing.assert_allclose(
                got.astype(float),
                want.astype(float),
                rtol=RTOL,
                atol=ATOL,
                equal_nan=True,
                err_msg=column,
            )


def test_the_recorded_run_is_worth_guarding():
    """The fixture exercises every default detector: each scored frames and flagged some."""
    golden = pd.read_csv(GOLDEN)
    detectors = {c.rsplit(":", 1)[0] for c in golden.columns if ":" in c}
    assert {
        "consensus",
        "background",
        "lof",
        "regions",
        "same_time",
        "temporal",
        "dark",
    } <= detectors
    for detector in detectors:
        assert golden[f"{detector}:score"].notna().mean() > 0.9, detector
        assert golden[f"{detector}:is_outlier"].any(), detector
    assert golden["cluster"].nunique() > 1


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python -m tests.pipeline.test_golden_scores --write  (rewrites {GOLDEN})")
    with tempfile.TemporaryDirectory() as tmp:
        table = produce(Path(tmp))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(
        GOLDEN, index=False, float_format="%.17g", compression={"method": "gzip", "mtime": 0}
    )
    print(f"wrote {GOLDEN}: {len(table)} frames, {len(table.columns)} columns")
