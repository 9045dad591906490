"""Scoring new frames against a frozen analysis run, without refitting (`score-new`).

`score_new(folder, db, settings)` ingests FOLDER, embeds its new frames with the run's model
at the precision of the run's vectors (`run_precision`; `run_embedder` builds that model, for
`serve` too), projects them with the run's saved scaler and PCA, finds their nearest fit
frames in the saved neighbour index, and scores them with the run's fitted detectors
(`FittedRun.score`, the path `analyze` writes the run's own scores through). Percentiles are
relative to the fit's score distributions, so a new frame's `score_pct` says where it would
have ranked in the run. Its rows are added to that run's `clusters`, `outlier_scores` and
`neighbors`. A frame that was part of the fit gets exactly the scores it got in the run.

A frame is "too far" when its nearest fit frame is farther than the run's `too_far_quantile`
(default 99th percentile) of fit frames' nearest-neighbour distances: the run has seen nothing
like it, so its scores deserve a look (or the run a refit).

The pieces are shared: `load_fitted_run` (the run, once), `score_batch` (vectors and frame
rows -> `ScoredFrames`, no store writes: what `serve` scores uploads with), `score_frames`
(stored frames, rows added to the run) and `score_folder` (ingest, embed, score: what `watch`
runs each pass with the run it keeps loaded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

import store
from pipeline.detectors import CONSENSUS, FrameBatch
from pipeline.errors import AnalysisError
from pipeline.fitted import FittedRun, RunScores, library_versions, neighbor_rows, neighbors_needed
from pipeline.models.precision import PrecisionChoice
from pipeline.models.registry import AUTO
from pipeline.pixels import GridReader, ThumbnailReader
from pipeline.settings import Settings
from pipeline.versioned import FittedFormatError
from store import analysis as sa
from store import embeddings as se
from store.causes import cause_key

if TYPE_CHECKING:
    import duckdb

    from pipeline.imagestats import FrameResult
    from pipeline.ingest import FileEntry, IngestSummary
    from pipeline.models.embedder import Embedder

log = logging.getLogger(__name__)


@dataclass
class ScoreNewResult:
    """Per new frame: every score, the nearest fit frame, its cluster, and whether too far."""

    run_id: int
    model: str
    frames: pd.DataFrame  # frame_id, path, cluster, nearest_frame_id, nearest_path,
    # nearest_distance, too_far, <detector>, <detector>_pct, is_outlier
    n_skipped: int = 0  # frames of the folder with no vector (embed failed)
    warnings: list[str] = field(default_factory=list)
    ingest_line: str = ""
    ingest: IngestSummary | None = None
    n_embed_failed: int = 0  # frames whose file could not be read again to embed them
    precision: str = ""  # what the new frames were embedded at (empty: none embedded)

    def describe(self) -> str:
        n = len(self.frames)
        lines = [self.ingest_line] if self.ingest_line else []
        lines += [f"warning: {w}" for w in self.warnings]
        if n == 0:
            lines.append(f"score-new (run {self.run_id}, {self.model}): no new frames to score")
            return "\n".join(lines)
        n_out = int(self.frames["is_outlier"].sum())
        n_far = int(self.frames["too_far"].sum())
        lines.append(
            f"score-new (run {self.run_id}, {self.model}): {n} frames scored, "
            f"{n_out} consensus outliers, {n_far} too far from every fit frame"
            + (f", {self.n_skipped} without a vector" if self.n_skipped else "")
            + (f"; embedded at {self.precision}" if self.precision else "")
        )
        show = self.frames.sort_values(f"{CONSENSUS}_pct", ascending=False).head(20)
        for row in show.itertuples(index=False):
            flag = " OUTLIER" if row.is_outlier else ""
            far = " TOO FAR" if row.too_far else ""
            lines.append(
                f"  {row.path}: consensus {getattr(row, CONSENSUS + '_pct'):.3f}, "
                f"cluster {row.cluster}, nearest {row.nearest_path} "
                f"(d={row.nearest_distance:.2f}){flag}{far}"
            )
        if n > len(show):
            lines.append(f"  ... {n - len(show)} more (the store has them all)")
        return "\n".join(lines)


def load_fitted_run(
    db: Path, run_id: int | None = None, model: str | None = None, read_only: bool = False
) -> tuple[FittedRun, list[str]]:
    """The saved fitted run (latest complete one with a fitted state when run_id is None), and
    warnings when it was made with other library versions."""
    with store.connect(db, read_only=read_only) as con:
        if run_id is None:
            run_id = sa.latest_fitted_run(con, model)
            if run_id is None:
                raise AnalysisError(
                    f"no complete analysis run with a saved fitted state in {db}"
                    + (f" for model {model}" if model else "")
                    + f"; run `python -m pipeline analyze --db {db}` first"
                )
        loaded = sa.load_fitted(con, run_id)
        if loaded is None:
            raise AnalysisError(_no_fitted_state(con, db, run_id))
    artifact, versions = loaded
    try:
        fitted = FittedRun.from_bytes(artifact)
    except FittedFormatError as exc:
        raise AnalysisError(
            f"the fitted state of run {run_id} cannot be used by this version of the pipeline: "
            f"{exc}. Re-run `python -m pipeline analyze --db {db}` to refit."
        ) from exc
    except Exception as exc:  # unpickling across library versions can fail in many ways
        raise AnalysisError(
            f"the fitted state of run {run_id} cannot be loaded with these library versions "
            f"({type(exc).__name__}: {exc}); it was saved with {versions}. Re-run "
            f"`python -m pipeline analyze --db {db}` to refit."
        ) from exc
    now = library_versions()
    differ = [
        f"{lib} {versions.get(lib)} -> {now[lib]}"
        for lib in now
        if lib != "pipeline" and versions.get(lib) != now[lib]
    ]
    warnings = []
    if differ:
        warnings.append(
            f"run {run_id} was fitted with other library versions ({'; '.join(differ)})"
            f": scores may differ slightly; re-run analyze to refit"
        )
    return fitted, warnings


def _no_fitted_state(con: duckdb.DuckDBPyConnection, db: Path, run_id: int) -> str:
    """Why run `run_id` has no fitted state, and the newest run that still has one."""
    run = sa.get_run(con, run_id)
    if run is None:
        why = f"there is no analysis run {run_id} in {db} (`prune` removes old runs)"
    elif run["status"] != "complete":
        why = f"run {run_id} is {run['status']} and has no saved fitted state"
    elif run["params"].get("save_fitted") is False:
        why = f"run {run_id} was analysed with save_fitted = false"
    else:
        why = (
            f"the fitted state of run {run_id} was dropped by a later analysis to keep the "
            "store small (setting keep_fitted_runs: only the newest runs of each model keep "
            "theirs)"
        )
    model = run["model"] if run is not None else None
    of_model = f"{model} " if model else ""
    newest = sa.latest_fitted_run(con, model)
    if newest is None:
        return f"{why}; no {of_model}run has one: run `python -m pipeline analyze --db {db}` first"
    return f"{why}; the newest {of_model}run with one is run {newest}: pass --run-id {newest}"


def run_precision(db: Path, fitted: FittedRun, requested: str = AUTO) -> PrecisionChoice:
    """The precision to embed new frames at for a run: `requested` when it is not `auto`, else
    the precision of the run's vectors (most of them, for a run over a mixed store; runs made
    before vectors recorded one: the model's vectors in the store, else float32), so a new frame
    is scored in the space the run was fitted in."""
    if requested != AUTO:
        return PrecisionChoice(requested, requested, "asked for")
    with store.connect(db, read_only=True) as con:
        run = sa.get_run(con, fitted.run_id)
        counts = (run or {}).get("params", {}).get("vector_precisions") or se.precision_counts(
            con, fitted.model
        )
    if not counts:
        return PrecisionChoice("float32", AUTO, f"run {fitted.run_id} records none: float32")
    precision = max(counts, key=counts.get)
    return PrecisionChoice(precision, AUTO, f"auto: the precision of run {fitted.run_id}'s vectors")


def run_embedder(
    db: Path, fitted: FittedRun, settings: Settings
) -> tuple[Embedder, PrecisionChoice]:
    """The run's model, built at `run_precision`: what `score-new` and `watch` embed new frames
    with, and what `serve` builds to score uploaded frames."""
    from pipeline.embed import build_embedder

    choice = run_precision(db, fitted, settings.precision)
    embedder, _ = build_embedder(settings.replace(model=fitted.model), precision=choice.precision)
    return embedder, choice


@dataclass
class ScoredFrames:
    """Frames scored against a frozen run (`score_batch`), rows in the order of `frame_ids`:
    every detector's and the consensus' scores, the cluster, the map point, the nearest fit
    frames (`nn_idx`: positions in the run's neighbour index, nearest first) and whether the
    nearest is too far."""

    frame_ids: np.ndarray
    scores: RunScores
    clusters: np.ndarray
    map_xy: np.ndarray
    nn_dist: np.ndarray
    nn_idx: np.ndarray
    too_far: np.ndarray

    @property
    def is_outlier(self) -> np.ndarray:
        """The consensus' flag: the run would call the frame junk."""
        return self.scores.flags[CONSENSUS]


def score_batch(
    fitted: FittedRun,
    frame_ids: np.ndarray,
    vectors: np.ndarray,
    frames: pd.DataFrame,
    pixels: GridReader | None,
    n_nearest: int = 0,
    groups: np.ndarray | None = None,
) -> ScoredFrames:
    """Score frames against a frozen run: raw vectors and their `store.analysis.load_frames`
    rows (times, image statistics, daylight) -> `ScoredFrames`, with at least `n_nearest`
    nearest fit frames. Nothing is read from or written to the store here but pixels
    (`pixels`). `score-new` and `watch` score stored frames through it, `serve` uploads. The
    frames scored in one call are each other's context for the time-lapse detectors, as the
    frames of one folder are in `score-new`, unless `groups` (a label per frame) says which
    frames belong together (`FittedRun.score`)."""
    z = fitted.transform(vectors)
    batch = FrameBatch.from_frames(
        frame_ids, z, frames, pixels=pixels, lat=fitted.lat, lon=fitted.lon
    )
    batch.regions = fitted.transform_regions(vectors)
    fitted.index.attach(batch, max(neighbors_needed(fitted.detectors), n_nearest))
    scored = fitted.score(batch, groups=groups)
    labels = np.asarray(fitted.predict_cluster(z, batch.nn_idx), dtype=np.int64)
    return ScoredFrames(
        frame_ids=batch.frame_ids,
        scores=scored,
        clusters=labels,
        map_xy=fitted.map_xy(z),
        nn_dist=batch.nn_dist,
        nn_idx=batch.nn_idx,
        too_far=batch.nn_dist[:, 0] > fitted.too_far_distance,
    )


def score_frames(
    db: Path, fitted: FittedRun, frame_ids: np.ndarray, write: bool = True
) -> tuple[pd.DataFrame, int]:
    """Score frames that have vectors of the run's model; add their rows to the run."""
    if not len(frame_ids):
        return _empty_report(fitted), 0
    with store.connect(db) as con:
        ids, vectors = se.load_vectors(con, fitted.model, frame_ids)
        frames = sa.load_frames(con, ids)
    n_skipped = len(np.unique(frame_ids)) - len(ids)
    if not len(ids):
        return _empty_report(fitted), n_skipped
    scored = score_batch(fitted, ids, vectors, frames, ThumbnailReader(db))
    run_id = fitted.run_id
    fit_ids = fitted.index.frame_ids_
    if write:
        cluster_rows = pd.DataFrame(
            {
                "run_id": run_id,
                "frame_id": ids,
                "cluster": scored.clusters.astype(np.int32),
                "map_x": scored.map_xy[:, 0],
                "map_y": scored.map_xy[:, 1],
            }
        )
        nn_rows = neighbor_rows(run_id, ids, scored.nn_dist, scored.nn_idx, fit_ids)
        with store.connect(db) as con:
            sa.add_scored_frames(
                con,
                run_id,
                clusters=cluster_rows,
                scores=scored.scores.rows(run_id),
                neighbors=nn_rows,
            )

    nearest_idx = scored.nn_idx[:, 0]
    nearest_ids = fit_ids[nearest_idx]
    with store.connect(db) as con:
        paths = sa.load_frames(con, np.concatenate([ids, nearest_ids]))
    path_of = dict(zip(paths["frame_id"], paths["path"]))
    report = pd.DataFrame(
        {
            "frame_id": ids,
            "path": [path_of.get(i) for i in ids],
            "cluster": scored.clusters,
            "nearest_frame_id": nearest_ids,
            "nearest_path": [path_of.get(i) for i in nearest_ids],
            "nearest_cluster": fitted.cluster_of_fit[nearest_idx],
            "nearest_distance": scored.nn_dist[:, 0].astype(float),
        }
    )
    report["too_far"] = scored.too_far
    for key in scored.scores.scores:
        report[key] = scored.scores.scores[key]
        report[f"{key}_pct"] = scored.scores.pcts[key]
    report["is_outlier"] = scored.is_outlier
    return report, n_skipped


def _empty_report(fitted: FittedRun) -> pd.DataFrame:
    cols = [
        "frame_id",
        "path",
        "cluster",
        "nearest_frame_id",
        "nearest_path",
        "nearest_cluster",
        "nearest_distance",
        "too_far",
    ]
    for key in [*fitted.detectors, *map(cause_key, fitted.consensus.causes_), CONSENSUS]:
        cols += [key, f"{key}_pct"]
    return pd.DataFrame(columns=cols + ["is_outlier"])


def score_new(
    folder: Path, db: Path, settings: Settings, progress: bool = True, run_id: int | None = None
) -> ScoreNewResult:
    """Ingest FOLDER, embed its new frames with the run's model, score them against the run."""
    db = Path(db)
    if not db.exists():
        raise AnalysisError(
            f"no store at {db}: analyse some frames first "
            f"(`python -m pipeline run FOLDER --db {db}`)"
        )
    fitted, warnings = load_fitted_run(db, run_id)
    result = score_folder(folder, db, settings, fitted, progress=progress)
    result.warnings[:0] = warnings
    return result


def score_folder(
    folder: Path,
    db: Path,
    settings: Settings,
    fitted: FittedRun,
    *,
    progress: bool = False,
    stage: str = "score-new",
    hold: Callable[[FileEntry, FrameResult], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    chunk: int | None = None,
    built: tuple[Embedder, PrecisionChoice] | None = None,
) -> ScoreNewResult:
    """The steps of `score_new` with a loaded run (`watch` keeps one loaded between passes):
    ingest FOLDER, embed the folder's frames that the run has no rows of (new, changed, or
    left unscored by a killed pass), score them and add them to the run, `chunk` frames per
    write transaction when given (all at once otherwise). `hold` and `should_stop` go to
    `ingest_folder` and `embed_frames`; `should_stop()` is also asked between chunks. New
    frames are embedded with `built` (the run's model at `run_precision`, which `watch` keeps
    between passes), else with `run_embedder`'s, built here when there is something to embed."""
    from pipeline.embed import embed_frames
    from pipeline.ingest import folder_root, ingest_folder

    summary = ingest_folder(
        Path(folder),
        db,
        settings,
        progress=progress,
        stage=stage,
        hold=hold,
        should_stop=should_stop,
    )
    root = folder_root(folder)
    with store.connect(db) as con:
        in_folder = sa.load_frames(con, root=root)["frame_id"].to_numpy(np.int64)
        in_run = sa.run_frame_ids(con, fitted.run_id)
    changed = np.asarray(summary.frame_ids, dtype=np.int64)
    todo = np.union1d(np.setdiff1d(in_folder, in_run), changed)
    n_failed, precision = 0, ""
    if len(todo) and not (should_stop is not None and should_stop()):
        embedder, choice = built or run_embedder(db, fitted, settings)
        embedded = embed_frames(
            db,
            settings.replace(model=fitted.model, precision=choice.precision),
            frame_ids=todo.tolist(),
            progress=progress,
            built=(embedder, choice),
            should_stop=should_stop,
        )
        n_failed, precision = embedded.failed, choice.describe()
    reports, n_skipped = [], 0
    step = chunk or max(1, len(todo))
    for start in range(0, len(todo), step):
        if start and should_stop is not None and should_stop():
            break
        report, skipped = score_frames(db, fitted, todo[start : start + step])
        reports.append(report)
        n_skipped += skipped
    report = (
        pd.concat(reports, ignore_index=True)
        if len(reports) > 1
        else reports[0]
        if reports
        else _empty_report(fitted)
    )
    return ScoreNewResult(
        run_id=fitted.run_id,
        model=fitted.model,
        frames=report,
        n_skipped=n_skipped,
        ingest_line=summary.describe(),
        ingest=summary,
        n_embed_failed=n_failed,
        precision=precision,
    )
