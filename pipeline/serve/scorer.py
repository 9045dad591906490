"""The scoring side of `serve`: the run and model it scores with, and uploads -> results.

`Scorer` holds one loaded run (`LoadedRun`: the fitted run, its model built once, the camera's
place) and swaps it for a newer complete run when `refresh()` finds one (unless a run id was
pinned); it never writes to the store and opens it read-only, briefly, for each look.

An upload goes through the steps a file takes through `score-new`, without the store: the
same decode, thumbnail, statistics, timestamp and model input, from one decode as in `run`
(`imagestats.read_frame_bytes`), the same times and daylight (`daylight.compute_times` with the
stored place), then `score_new.score_batch` against the same fitted run, with the upload's
thumbnail read as a stored one would be (`pixels.UploadReader`). So a file gets the scores
`score-new` gives it. While scored, uploads carry ids from `UPLOAD_ID_BASE` up, which no stored
frame has. `score_groups` embeds the uploads of several requests in one model pass, then scores
each request's frames as one batch (the frames of one request are each other's time-lapse
context, as a folder's are in `score-new`; other requests' frames never are).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import store
from pipeline import daylight
from pipeline.embed import build_embedder, load_frame, same_weights
from pipeline.errors import AnalysisError, PipelineError
from pipeline.fitted import FittedRun
from pipeline.imagestats import FrameResult, read_frame_bytes
from pipeline.ingest import time_rows
from pipeline.models.embedder import Embedder
from pipeline.pixels import (
    HEADER_BYTES,
    FrameDecodeError,
    GridCache,
    ThumbnailReader,
    UploadReader,
    check_header,
    configure,
)
from pipeline.score_new import load_fitted_run, run_precision, score_batch
from pipeline.serve.uploads import FRAME_PROBLEMS, FilePart, UploadError
from pipeline.settings import Settings
from pipeline.timestamps import given_time
from store import analysis as sa
from store import embeddings as se

# uvicorn's logger: in the `serve` process its lines show among uvicorn's own, at INFO level
log = logging.getLogger("uvicorn.error")

UPLOAD_ID_BASE = 2**62  # ids of uploads while they are scored: beyond any stored frame's


@dataclass
class LoadedRun:
    """What the service scores with: a fitted run, its model (built once) and the place."""

    fitted: FittedRun
    embedder: Embedder
    place: daylight.Place
    warnings: list[str] = field(default_factory=list)
    grids: GridCache = field(default_factory=GridCache)  # the run's stored frames, decoded

    @property
    def run_id(self) -> int:
        return self.fitted.run_id

    @property
    def n_frames(self) -> int:
        """Frames of the fit (what new frames are compared with)."""
        return len(self.fitted.index.frame_ids_)


class Unavailable(Exception):
    """The service cannot answer now (no run to score with, the store busy or unreadable):
    HTTP 503 with `problem` and the message; `retry_after` seconds when it is worth waiting."""

    def __init__(self, message: str, problem: str, retry_after: int | None = None):
        super().__init__(message)
        self.problem = problem
        self.retry_after = retry_after


@dataclass
class Upload:
    """One decoded upload: its file's bytes, what ingest would store of it, the model input."""

    filename: str
    data: bytes
    frame: FrameResult
    pixels: np.ndarray
    decode_seconds: float
    queued_at: float = 0.0


def decode_upload(
    part: FilePart, taken_at: str | None, settings: Settings, input_size: int
) -> Upload:
    """Decode one uploaded file as ingest and embed would read it; UploadError if it is not a
    usable frame (JPEG, PNG, WebP or BMP), or its `taken_at` is not a time."""
    started = time.monotonic()
    frame = FrameResult(name=part.filename, file_bytes=part.size, mtime_ns=None)
    try:
        check_header(part.data[:HEADER_BYTES])  # names a HEIC, TIFF or text file as ingest does
    except FrameDecodeError as exc:
        frame.error, frame.error_kind = str(exc), exc.kind
    else:
        # one decode for the thumbnail, statistics, time and the model's input, as `run` does
        read_frame_bytes(
            part.data,
            frame,
            settings.thumbnail_size,
            settings.max_image_pixels,
            model_size=input_size,
        )
    if frame.error is not None:
        kind = frame.error_kind or "corrupt"
        raise UploadError(
            FRAME_PROBLEMS.get(kind, 422), kind, f"{part.filename}: {frame.error}", part.filename
        )
    if taken_at is not None:
        try:
            frame.time = given_time(taken_at)
        except ValueError as exc:
            raise UploadError(
                422, "bad_taken_at", f"{part.filename}: taken_at {exc}", part.filename
            ) from None
    pixels, frame.model_input = frame.model_input, None
    return Upload(part.filename, part.data, frame, pixels, time.monotonic() - started)


class Scorer:
    """The loaded run and model; scores groups of uploads; finds newer runs (`refresh`)."""

    def __init__(self, db, settings: Settings, run_id: int | None = None):
        self.db = db
        self.settings = settings
        self.pinned = run_id
        self.loaded: LoadedRun | None = None
        self.problem = (
            f"no complete analysis run with a saved fitted state in {db} yet; run "
            f"`python -m pipeline analyze --db {db}` first"
        )
        self._refreshing = threading.Lock()
        self._refused: dict[int, str] = {}  # run id -> why it cannot be served here
        configure(settings.max_image_pixels)  # Pillow: bombs and truncation are errors

    # --- which run ------------------------------------------------------------------------

    def run(self) -> LoadedRun:
        """The loaded run, or `Unavailable` saying why there is none."""
        loaded = self.loaded
        if loaded is None:
            raise Unavailable(self.problem, "no_run", retry_after=30)
        return loaded

    def refresh(self) -> None:
        """Load the newest complete run with a fitted state when it is not the one loaded (the
        pinned run, once). A run that cannot be loaded here is logged once and skipped; the
        loaded one keeps serving. The stored place is read again each time (`locate`)."""
        with self._refreshing:
            with store.connect(self.db, read_only=True) as con:
                run_id = self.pinned if self.pinned is not None else sa.latest_fitted_run(con)
                place = daylight.stored_place(con)
            current = self.loaded
            if current is not None and current.place != place:
                self.loaded = current = dataclasses.replace(current, place=place)
            if run_id is None or (current is not None and current.run_id == run_id):
                return
            if run_id in self._refused:
                return
            try:
                loaded = self._load(run_id, place)
            except PipelineError as exc:  # no usable fit, the model not buildable here...
                if self.pinned is not None:
                    raise
                self._refused[run_id] = str(exc)
                log.error("serve: cannot switch to run %s: %s", run_id, exc)
                if current is None:
                    self.problem = str(exc)
                return
            for warning in loaded.warnings:
                log.warning("serve: %s", warning)
            self.loaded = loaded
            log.info(
                "serve: scoring against run %s (%s, %d frames)",
                loaded.run_id,
                loaded.fitted.model,
                loaded.n_frames,
            )

    def _load(self, run_id: int, place: daylight.Place) -> LoadedRun:
        fitted, warnings = load_fitted_run(self.db, run_id, read_only=True)
        current = self.loaded
        # the run's model at the precision of the run's vectors (or the `precision` setting
        # when it is not auto), so an upload is embedded in the space the run was fitted in
        choice = run_precision(self.db, fitted, self.settings.precision)
        if current is not None and (current.embedder.key, current.embedder.precision) == (
            fitted.model,
            choice.precision,
        ):
            embedder = current.embedder
        else:
            embedder, _ = build_embedder(
                self.settings.replace(model=fitted.model), precision=choice.precision
            )
            log.info("serve: %s at %s", fitted.model, choice.describe())
        with store.connect(self.db, read_only=True) as con:
            row = se.get_model_row(con, fitted.model)
        if row is not None and not same_weights(row.weights, embedder.weights):
            raise AnalysisError(
                f"run {run_id}'s {fitted.model} vectors were made with other weights "
                f"({row.weights}) than this model has here ({embedder.weights}); give the same "
                "weights file (setting weights) so uploads are comparable"
            )
        return LoadedRun(
            fitted, embedder, place, warnings, GridCache(self.settings.serve_cache_mb * 2**20)
        )

    # --- scoring ----------------------------------------------------------------------------

    def score_groups(self, groups: list[list[Upload]]) -> list[tuple[int, list[dict]]]:
        """Score each group of uploads (one request's files) against the loaded run, all of
        them in one model pass and one detector pass: (run id, one result per upload) per
        group. The groups are not each other's context (`FittedRun.score`'s `groups`)."""
        run = self.run()
        uploads = [u for group in groups for u in group]
        vectors = self._embed(run.embedder, uploads)
        ids = UPLOAD_ID_BASE + np.arange(len(uploads), dtype=np.int64)
        labels = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        frames = pd.concat(
            [
                upload_frames(ids[labels == n], [u.frame for u in group], run.place, self.settings)
                for n, group in enumerate(groups)
            ],
            ignore_index=True,
        )
        pixels = UploadReader(
            {int(i): u.frame.thumbnail for i, u in zip(ids, uploads)},
            ThumbnailReader(self.db, read_only=True, cache=run.grids),
        )
        scored = score_batch(
            run.fitted,
            ids,
            vectors,
            frames,
            pixels,
            n_nearest=self.settings.serve_nearest,
            groups=labels,
        )
        k = min(self.settings.serve_nearest, scored.nn_idx.shape[1])
        nearest = run.fitted.index.frame_ids_[scored.nn_idx[:, :k]]
        with store.connect(self.db, read_only=True) as con:
            facts = sa.load_frames(con, np.unique(nearest))
        taken = dict(zip(facts["frame_id"].tolist(), map(_iso, facts["taken_at"])))
        done = time.monotonic()
        results = [
            {
                "filename": upload.filename,
                "verdict": "junk" if scored.is_outlier[row] else "ok",
                "too_far": bool(scored.too_far[row]),
                "cluster": int(scored.clusters[row]),
                "scores": {
                    key: {
                        "score": _number(values[row]),
                        "percentile": _number(scored.scores.pcts[key][row]),
                    }
                    for key, values in scored.scores.scores.items()
                },
                "nearest": [
                    {"frame_id": int(i), "taken_at": taken.get(int(i)), "distance": float(d)}
                    for i, d in zip(nearest[row], scored.nn_dist[row, :k])
                ],
                "taken_at": _iso(frames["taken_at"].iloc[row]),
                "seconds": round(upload.decode_seconds + done - upload.queued_at, 4),
            }
            for row, upload in enumerate(uploads)
        ]
        return [
            (run.run_id, [results[row] for row in np.flatnonzero(labels == n)])
            for n in range(len(groups))
        ]

    def _embed(self, embedder: Embedder, uploads: list[Upload]) -> np.ndarray:
        size = embedder.input_size
        pixels = [
            u.pixels
            if u.pixels.shape[0] == size  # the run's model changed meanwhile
            else load_frame(u.data, size)
            for u in uploads
        ]
        step = self.settings.batch_size
        return np.concatenate(
            [embedder.embed(np.stack(pixels[i : i + step])) for i in range(0, len(pixels), step)]
        )


def upload_frames(
    ids: np.ndarray, frames: list[FrameResult], place: daylight.Place, settings: Settings
) -> pd.DataFrame:
    """Uploads as `store.analysis.load_frames` rows (what `FrameBatch.from_frames` reads):
    times and daylight computed as ingest computes them for stored frames."""
    rows = time_rows(frames)
    times = daylight.compute_times(rows, place, settings).times
    return pd.DataFrame(
        {
            "frame_id": ids,
            "path": [f.name for f in frames],
            "taken_at": times["taken_at"].to_numpy(),
            "taken_at_utc": times["taken_at_utc"],
            "mean_luma": rows["mean_luma"],
            "contrast": rows["contrast"],
            "sharpness": rows["sharpness"],
            "colorfulness": rows["colorfulness"],
            "local_contrast": rows["local_contrast"],
            "sharpness_cells": rows["sharpness_cells"],
            "daylight": times["daylight"],
        }
    )


def _number(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _iso(value) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()
