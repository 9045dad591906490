"""One frame file's ingest facts: ~256 px thumbnail, content hash, time and cheap statistics,
and, for `run`, the model's input from the same read.

`read_frame(task)` is the per-frame work of ingest's worker processes, of `run`'s one pass and of
any executor that runs them elsewhere (a pure function: a picklable `FrameTask` in, a picklable
`FrameResult` out, no store). It reads the file once (bytes -> hash and decode) after the cheap
checks, and decodes it through `pipeline.pixels` (the one decoding path: JPEG draft mode just
big enough for the thumbnail, EXIF orientation, CMYK, 16-bit, palette and alpha images to RGB),
then computes the statistics on the thumbnail, so every frame is measured at the same scale.
With `task.model_size` it also builds the model's input (`pixels.model_input`) from the same
bytes: from the same decode when the model's draft scale is the thumbnail's (1080p frames and
larger), else from a second decode at the model's own scale, so thumbnail, statistics and vector
are exactly those of `ingest` then `embed`. It never raises for a bad file: the result carries a
clear message instead.

Statistics (all on the RGB thumbnail, 0..255 scale):
- `mean_luma`: mean Rec.601 luma; `contrast`: its standard deviation;
- `sharpness`: variance of the 4-neighbour Laplacian of luma (low = blurred or foggy);
- `colorfulness`: Hasler & Suesstrunk (2003) metric (0 = grey, ~100+ = very colourful);
- `local_contrast`: the mean over the image of luma's standard deviation in each 9 x 9 window
  (low = flat: haze, fog, smoke, a wet film), measured on the stored JPEG thumbnail itself, so
  that `backfill_thumbnail_measures` gives frames ingested before it the very value ingest gives
  (JPEG at quality 80 takes up to a sixth of the local contrast of a smooth image);
- `sharpness_cells`: `sharpness` of each cell of the view cut 3 x 3 (row by row from the top
  left), also on the stored thumbnail: water or dirt on part of the lens softens a few cells
  while the rest of the view keeps the whole frame's sharpness near its usual.
"""

from __future__ import annotations

import errno
import hashlib
import io
import signal
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import simplejpeg
from scipy import ndimage

from pipeline import pixels
from pipeline.timestamps import FrameTime, frame_time

THUMBNAIL_QUALITY = 80
CELL_GRID = 3  # `sharpness_cells`: the view cut CELL_GRID x CELL_GRID


@dataclass
class Stats:
    mean_luma: float
    contrast: float
    sharpness: float
    colorfulness: float


class FrameTask(NamedTuple):
    """One file to read: what the driver sends a worker (a tuple, so it pickles small)."""

    os_path: str  # what open() needs
    name: str  # path relative to the root, as stored
    file_bytes: int  # size the listing gave
    mtime_ns: int
    thumb_size: int  # long side of the thumbnail
    max_pixels: int  # decompression-bomb limit
    max_bytes: int  # larger files are refused unread
    model_size: int | None = None  # also the model's square input of this size (run)
    date_order: str | None = None  # its folder's, for a date written year last (timestamps)


@dataclass
class FrameResult:
    """What a worker learned about one file; `error` is set when it is not a usable frame."""

    name: str  # path relative to the root, as stored
    file_bytes: int
    mtime_ns: int | None  # None: bytes with no file (an upload to `serve`)
    error: str | None = None
    error_kind: str | None = None  # FrameDecodeError.kind of `error`, when it is one
    width: int | None = None  # upright (after EXIF orientation)
    height: int | None = None
    content_hash: str | None = None
    stats: Stats | None = None
    thumbnail: bytes | None = None
    thumb_width: int | None = None
    thumb_height: int | None = None
    local_contrast: float | None = None
    sharpness_cells: list[float] | None = None
    time: FrameTime | None = None
    model_input: np.ndarray | None = None  # uint8 [s, s, 3] when the task asked for it


def configure_worker(max_image_pixels: int) -> None:
    """A decode worker process (ingest's pool, `run`'s one pass): `pixels.configure`, and
    Ctrl-C left to the parent. A terminal sends Ctrl-C to the whole process group; the parent
    stops the pool itself (`watch` after the batch being written), so a worker must not die
    mid-task with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pixels.configure(max_image_pixels)


def read_frame(task: FrameTask | tuple) -> FrameResult:
    """Read and decode one file (see the module docstring); never raises for a bad file."""
    task = FrameTask(*task)
    result = FrameResult(name=task.name, file_bytes=task.file_bytes, mtime_ns=task.mtime_ns)
    try:
        data = pixels.read_image_file(task.os_path, task.file_bytes, task.max_bytes)
    except pixels.FrameDecodeError as exc:
        result.error, result.error_kind = str(exc), exc.kind
        return result
    except OSError as exc:
        result.error = describe_os_error(exc)
        return result
    return read_frame_bytes(
        data, result, task.thumb_size, task.max_pixels, task.model_size, task.date_order
    )


def read_frame_bytes(
    data: bytes,
    result: FrameResult,
    thumb_size: int,
    max_pixels: int | None = None,
    model_size: int | None = None,
    date_order: str | None = None,
) -> FrameResult:
    """Fill `result` from a frame file's bytes: decode, thumbnail, statistics, timestamp and,
    with `model_size`, the model's square input (or set its `error`). `read_frame` reads the
    file first; `serve` has the bytes of an upload (and no mtime: `result.mtime_ns` None, so
    its time comes from EXIF or the name only)."""
    boxes = [lambda w, h: pixels.draft_box(w, h, thumb_size)]
    if model_size is not None:
        boxes.append(pixels.square_box(model_size))
    try:
        originals = pixels.decode_originals(data, boxes, max_pixels)
    except pixels.FrameDecodeError as exc:
        result.error, result.error_kind = str(exc), exc.kind
        return result
    if model_size is not None:  # first: the thumbnail below shrinks a shared image
        result.model_input = pixels.model_input(originals[1], model_size)
    image, exif = pixels.shrink_within(originals[0], thumb_size)
    result.content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    result.width, result.height = image.info["upright_size"]
    result.time = frame_time(exif, result.name, result.mtime_ns, date_order)
    rgb = np.asarray(image, dtype=np.float32)
    result.stats = image_stats(rgb)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    result.thumbnail = buffer.getvalue()
    result.thumb_width, result.thumb_height = image.size
    result.local_contrast, result.sharpness_cells = thumbnail_measures(result.thumbnail)
    return result


def image_stats(rgb: np.ndarray) -> Stats:
    """Statistics of an RGB array (H, W, 3) on the 0..255 scale."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    sharpness = float(_laplacian(luma).var()) if min(luma.shape) >= 3 else 0.0
    rg = r - g
    yb = 0.5 * (r + g) - b
    colorfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return Stats(
        mean_luma=float(luma.mean()),
        contrast=float(luma.std()),
        sharpness=sharpness,
        colorfulness=colorfulness,
    )


def _laplacian(luma: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of a luma image (H, W), on its interior (H - 2, W - 2)."""
    return (
        luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * luma[1:-1, 1:-1]
    )


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Rec.601 luma (H, W) of an RGB image (H, W, 3; 0..255), float32."""
    return np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def cell_sharpness(rgb: np.ndarray, grid: int = CELL_GRID) -> list[float] | None:
    """`sharpness` of each cell of an RGB image (H, W, 3; 0..255) cut `grid` x `grid`, row by
    row from the top left; None when a cell would be under 3 x 3 pixels."""
    return _cell_sharpness(_luma(rgb), grid)


def _cell_sharpness(luma: np.ndarray, grid: int = CELL_GRID) -> list[float] | None:
    if min(luma.shape) < 3 * grid + 2:
        return None
    lap = _laplacian(luma)
    h, w = lap.shape
    return [
        float(lap[i * h // grid : (i + 1) * h // grid, j * w // grid : (j + 1) * w // grid].var())
        for i in range(grid)
        for j in range(grid)
    ]


LOCAL_WINDOW = 9  # pixels across the window of `local_contrast` (on a ~256 px thumbnail)


def local_contrast(rgb: np.ndarray) -> float:
    """Mean over an RGB image (H, W, 3; 0..255) of the standard deviation of luma in the
    `LOCAL_WINDOW` x `LOCAL_WINDOW` window around each pixel."""
    return _local_contrast(_luma(rgb))


def _local_contrast(luma: np.ndarray) -> float:
    """`local_contrast` of a float32 luma image, which it overwrites."""
    mean = ndimage.uniform_filter(luma, LOCAL_WINDOW)
    np.square(luma, out=luma)
    mean_square = ndimage.uniform_filter(luma, LOCAL_WINDOW)
    mean_square -= np.square(mean)
    return float(np.sqrt(np.maximum(mean_square, 0)).mean())


def thumbnail_measures(jpeg: bytes) -> tuple[float | None, list[float] | None]:
    """(`local_contrast`, `sharpness_cells`) of a stored thumbnail, from one decode (None
    where it cannot be decoded)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    except ValueError:
        return None, None
    grid = pixels.decode_thumbnail(jpeg, (width, height))
    if grid is None:
        return None, None
    luma = _luma(grid)
    cells = _cell_sharpness(luma)  # first: `_local_contrast` overwrites the luma
    return _local_contrast(luma), cells


def backfill_thumbnail_measures(db, chunk: int = 1024) -> int:
    """Give frames ingested before `local_contrast` or `sharpness_cells` was measured the
    values ingest would give them, from their stored thumbnails (a thumbnail that cannot be
    decoded leaves NULL). Returns the number of frames filled in; one short write per `chunk`
    frames."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    import store
    from store import frames as frames_store

    with store.connect(db) as con:
        missing = frames_store.lacking_thumbnail_measures(con)
    filled = 0
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            with store.connect(db) as con:
                thumbs = frames_store.thumbnails(con, part)
            measured = list(pool.map(thumbnail_measures, (bytes(j) for j in thumbs["jpeg"])))
            rows = pd.DataFrame(
                {
                    "frame_id": thumbs["frame_id"].to_numpy(np.int64),
                    "local_contrast": pd.array([m[0] for m in measured], dtype="Float64"),
                    "sharpness_cells": pd.Series([m[1] for m in measured], dtype=object),
                }
            )
            rows = rows[rows["local_contrast"].notna() | rows["sharpness_cells"].notna()]
            with store.connect(db) as con:
                frames_store.update_thumbnail_measures(con, rows)
            filled += len(rows)
    return filled


def decode_stats(task: tuple[str, int, int]) -> Stats:
    """Decode-only ceiling for the benchmark: read, draft-decode, thumbnail, stats; no more."""
    os_path, thumb_size, max_pixels = task
    with open(os_path, "rb") as fh:
        data = fh.read()
    image, _ = pixels.decode_within(data, thumb_size, max_pixels)
    return image_stats(np.asarray(image, dtype=np.float32))


def describe_os_error(exc: OSError) -> str:
    """A clear message for a file that cannot be read."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot read the file: permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link points back to itself"
    if exc.errno == errno.ENOENT:
        return "the file disappeared or is a broken link"
    if exc.errno == errno.EISDIR:
        return "a folder named like an image"
    return f"cannot read the file: {exc.strerror or exc}"
