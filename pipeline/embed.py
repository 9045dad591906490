"""The embed stage: a vector per frame for one model, fast, resumable, committed per batch.

`embed_frames` is the front door; its inner loop `embed_pending` has three steps:

1. **plan** (`plan_batches`): the frames that lack a vector for the model, in batches of
   `batch_size`;
2. **compute**, behind an executor (`pipeline.executors`; `LocalExecutor` by default): the
   per-frame function `decode_frame` reads each original file (Pillow JPEG draft mode: the DCT
   decodes at 1/2, 1/4 or 1/8 scale, still at least the model's input size) in worker threads,
   a few batches ahead of inference, and the per-batch function `embed_batch` runs the model;
3. **commit** (`BatchWriter`): the single writer. Workers hand their results back to the
   driver; only the driver writes to the store (DuckDB has one writer). Each batch's vectors
   are committed in their own short write connection by a writer thread while the next batch
   is inferred, so a killed run loses at most one finished batch, and the next run continues
   with the frames that still lack a vector.

A frame whose file vanished or no longer decodes becomes an `ingest_errors` row (stage 'embed')
and is skipped.
"""

from __future__ import annotations

import logging
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

import store
from pipeline import pixels
from pipeline.errors import InputError
from pipeline.executors import Executor, LocalExecutor
from pipeline.models import ModelSpec, get_model
from pipeline.models.embedder import Embedder
from pipeline.settings import Settings
from store import embeddings as embeddings_store
from store.embeddings import ModelRow, PendingFrame

log = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    """What one embed call did; `describe()` is the line the CLI prints."""

    model: str
    embedded: int = 0
    already_done: int = 0
    failed: int = 0
    seconds: float = 0.0
    replaced: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        parts = [f"embed {self.model}: {self.embedded} frames embedded"]
        if self.embedded:
            parts[0] += f" in {self.seconds:.1f} s ({self.frames_per_s:.1f} frames/s)"
        if self.replaced:
            parts.append(f"{self.replaced} old vectors replaced")
        parts.append(f"{self.already_done} already had vectors")
        parts.append(f"{self.failed} failed" + (" (see ingest errors)" if self.failed else ""))
        return ", ".join(parts)


def load_frame(path: Path | bytes, size: int) -> np.ndarray:
    """Decode an image file (or its bytes) to RGB uint8 `[size, size, 3]`: the whole frame, squashed, upright.

    Through `pipeline.pixels`, the one decoding path: JPEG draft mode decodes at the smallest
    DCT scale that is still >= size on both sides (several times faster than a full decode of
    a large frame), and modes and EXIF orientation are handled as for thumbnails, so a frame's
    vector and its thumbnail show the same picture. Raises `pixels.FrameDecodeError` for a file
    that is no frame, OSError for one that cannot be opened.
    """
    original = pixels.decode_original(path, lambda w, h: (size, size))
    image = original.image
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    # turned after squashing: the same pixels as turning first, on a smaller image
    return np.asarray(pixels.upright(image, original.orientation), dtype=np.uint8)


def decode_frame(frame: PendingFrame, size: int
                 ) -> tuple[PendingFrame, np.ndarray | None, str | None]:
    """Per-frame work: (frame, RGB uint8 [size, size, 3], None), or (frame, None, why not)."""
    from pipeline.ingest import frame_file  # here: pipeline.ingest imports pandas (slow start)

    path = frame_file(frame.root, frame.path)
    try:
        return frame, load_frame(path, size), None
    except FileNotFoundError:
        return frame, None, f"file vanished: {path}"
    except (pixels.FrameDecodeError, OSError) as exc:
        return frame, None, f"cannot decode {path}: {exc}"


@dataclass
class EmbeddedBatch:
    """One batch's result, what a worker hands back to the driver's writer."""

    frame_ids: np.ndarray                     # int64, one per vector
    vectors: np.ndarray                       # float32 [len(frame_ids), dim]
    errors: list[tuple[PendingFrame, str]]    # frames that could not be read, and why
    n_frames: int                             # frames in the batch (vectors + errors)


def embed_batch(embedder: Embedder,
                decoded: list[tuple[PendingFrame, np.ndarray | None, str | None]]
                ) -> EmbeddedBatch:
    """Per-batch work: the model on the batch's decoded frames."""
    good = [(frame, pixels) for frame, pixels, _ in decoded if pixels is not None]
    errors = [(frame, message) for frame, _, message in decoded if message is not None]
    ids = np.array([frame.frame_id for frame, _ in good], dtype=np.int64)
    if good:
        vectors = embedder.embed(np.stack([pixels for _, pixels in good]))
    else:
        vectors = np.zeros((0, embedder.dim), dtype=np.float32)
    return EmbeddedBatch(ids, vectors, errors, len(decoded))


def plan_batches(pending: Sequence[PendingFrame], batch_size: int) -> list[list[PendingFrame]]:
    """The frames to embed in batches of `batch_size` (each batch is one inference and one
    commit)."""
    return [list(pending[i:i + batch_size]) for i in range(0, len(pending), batch_size)]


class BatchWriter:
    """The single writer: commits batches in a background thread, one short write connection each.

    `put()` first waits for the previous batch's commit (and re-raises its error), so at most
    one finished batch is ever uncommitted.
    """

    def __init__(self, db: Path, model: str):
        self._db = db
        self._model = model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-writer")
        self._last: Future | None = None
        self.embedded = 0

    def _commit(self, batch: EmbeddedBatch) -> int:
        with store.connect(self._db, migrate=False) as con:
            return embeddings_store.insert_vectors(con, self._model, batch.frame_ids,
                                                   batch.vectors, batch.errors)

    def wait(self) -> None:
        if self._last is not None:
            last, self._last = self._last, None
            self.embedded += last.result()

    def put(self, batch: EmbeddedBatch) -> None:
        self.wait()
        self._last = self._pool.submit(self._commit, batch)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


_HASH = re.compile(r"blake2b ([0-9a-f]+)")


def same_weights(old: str, new: str) -> bool:
    """Whether two `models.weights` descriptions name the same weights (by their hash when
    both have one)."""
    old_hash, new_hash = _HASH.search(old), _HASH.search(new)
    if old_hash and new_hash:
        return old_hash[1] == new_hash[1]
    return old == new


def _progress_bar(total: int, model: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=f"embed {model}", disable=not enabled,
                smoothing=0.05, dynamic_ncols=True)


def build_embedder(spec: ModelSpec, settings: Settings) -> Embedder:
    """The one place a model is built for use (`embed`, `score-new`, `watch`, `serve`): with
    the settings' weights file when one is given. Raises `ModelUnavailableError` with the fix."""
    return spec.build(settings.weights)


def embed_frames(db: Path, settings: Settings, frame_ids: Sequence[int] | None = None,
                 progress: bool = True, replace: bool = False,
                 should_stop: Callable[[], bool] | None = None) -> EmbedSummary:
    """Embed every frame (of `frame_ids` when given) that lacks a vector for `settings.model`.

    Uses settings.model, .weights, .batch_size and .workers. `replace=True` deletes all of the
    model's vectors once the model is built (e.g. after changing its weights file), then
    embeds again. Raises `ModelUnavailableError`
    when the model cannot be built here (never switches to another model) and `InputError`
    when the store already holds vectors of this model made with different weights.
    """
    started = time.monotonic()
    db = Path(db)
    spec = get_model(settings.model)
    if settings.weights is not None:
        check = spec.available(settings.weights)
        if not check.ok:
            raise InputError(f"--weights for {spec.key}: {check.detail}")
    pixels.configure(settings.max_image_pixels)

    with store.connect(db) as con:
        n_scope = embeddings_store.count_frames(con, frame_ids)
        pending = embeddings_store.pending_frames(con, spec.key, frame_ids)
        existing = embeddings_store.get_model_row(con, spec.key)
        n_existing = embeddings_store.count_vectors(con, spec.key) if existing else 0
    summary = EmbedSummary(spec.key, already_done=n_scope - len(pending))
    replacing = replace and (n_existing > 0 or existing is not None)
    if not pending and not replacing:
        summary.seconds = time.monotonic() - started
        return summary

    _check_roots(db, pending)
    embedder = build_embedder(spec, settings)  # before any delete: a failed build changes nothing
    row = ModelRow(spec.key, spec.family, embedder.weights, embedder.dim, embedder.input_size)
    if replacing:
        with store.connect(db, migrate=False) as con:
            summary.replaced = embeddings_store.delete_model(con, spec.key)
            pending = embeddings_store.pending_frames(con, spec.key, frame_ids)
        summary.already_done = n_scope - len(pending)
        _check_roots(db, pending)
    elif existing is not None and n_existing and (
            not same_weights(existing.weights, row.weights) or existing.dim != row.dim):
        raise InputError(
            f"the store's {n_existing} {spec.key} vectors were made with other weights "
            f"({existing.weights}, {existing.dim}-d); now: {row.weights}, {row.dim}-d. Mixing "
            f"them would make the vectors incomparable: use the same weights, or re-embed "
            f"every frame with `python -m pipeline embed --db {db} --model {spec.key} --replace`.")
    with store.connect(db, migrate=False) as con:
        embeddings_store.record_model(con, row)
    log.info("embedding %d frames with %s (%d-d, %s)", len(pending), spec.key, row.dim,
             row.weights)

    summary.embedded, summary.failed = embed_pending(db, embedder, pending, settings, progress,
                                                     should_stop=should_stop)
    summary.seconds = time.monotonic() - started
    return summary


def _check_roots(db: Path, pending: list[PendingFrame]) -> None:
    """Refuse at once when every frames folder is gone (moved or unmounted), before the build."""
    roots = sorted({frame.root for frame in pending})
    if roots and not any(os.path.isdir(root) for root in roots):
        shown = ", ".join(roots[:3]) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")
        raise InputError(
            f"the frames folder {shown} no longer exists, so no frame can be read: mount it "
            f"again, or if it moved, run `python -m pipeline ingest NEW_FOLDER --db {db}` "
            "(frames keep their ids and vectors), then embed again")


def embed_pending(db: Path, embedder: Embedder, pending: list[PendingFrame], settings: Settings,
                  progress: bool = False, executor: Executor | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[int, int]:
    """Embed `pending` with a built model: plan the batches, compute them with `executor`
    (default: `LocalExecutor(settings.workers)`), commit each batch as it comes back; when
    `should_stop()` turns true, stop after the batch being committed (`watch` on SIGTERM).
    Returns (vectors added, frames failed). `embed_frames` is the front door; this is its
    inner loop (the benchmark times it with a warmed-up model)."""
    batches = plan_batches(pending, settings.batch_size)
    executor = executor or LocalExecutor(settings.workers)
    computed = executor.map_batches(batches, partial(decode_frame, size=embedder.input_size),
                                    partial(embed_batch, embedder))
    n_failed = 0
    writer = BatchWriter(db, embedder.key)
    bar = _progress_bar(len(pending), embedder.key, progress)
    try:
        with closing(computed):
            for batch in computed:
                for _, message in batch.errors:
                    log.warning("embed: %s", message)
                writer.put(batch)
                n_failed += len(batch.errors)
                bar.update(batch.n_frames)
                if should_stop is not None and should_stop():
                    break
        writer.close()
    finally:
        bar.close()
        writer.close()  # a Ctrl-C still commits the batch that was handed over
    return writer.embedded, n_failed
