"""Pixels from stored thumbnails or arrays in memory, as small RGB grids of frames by frame_id.

`ThumbnailReader` decodes the thumbnails the store holds (libjpeg-turbo through simplejpeg, at
the smallest DCT scale that is at least the grid, in threads, a chunk of frames per short
connection, so memory stays flat with the number of frames); `ArrayReader` serves images held
in memory (tests, callers that have the pixels already), and a `GridCache` keeps decoded grids
between reads (`serve`); `UploadReader` serves the thumbnails
of frames that are not in the store (`serve`'s uploads), decoded exactly as stored ones are,
and the store's for the others. All follow `GridReader`, which the detectors that look at
pixels read (`FrameBatch.pixels`).
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import simplejpeg
from PIL import Image

import store
from store import frames as store_frames


class GridReader(Protocol):
    """Where a detector gets pixels: small RGB grids of frames by frame_id."""

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        """Typical width / height of these frames' images (None when there are none)."""

    def grids(self, frame_ids: np.ndarray, size: tuple[int, int]
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (positions into `frame_ids`, RGB grids [m, height, width, 3] in 0..255,
        uint8 or float). Frames without an image are left out."""


class GridCache:
    """Decoded grids kept between reads (frame_id, size -> grid), least recently used first
    out beyond `max_bytes`; shared by threads. `serve` keeps one per loaded run, so the fit
    frames the `background` detector compares every upload with are decoded once."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self.n_bytes = 0
        self._grids: OrderedDict[tuple[int, tuple[int, int]], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, frame_id: int, size: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            grid = self._grids.get((frame_id, size))
            if grid is not None:
                self._grids.move_to_end((frame_id, size))
            return grid

    def put(self, frame_id: int, size: tuple[int, int], grid: np.ndarray) -> None:
        with self._lock:
            if (frame_id, size) in self._grids:
                return
            self._grids[(frame_id, size)] = grid
            self.n_bytes += grid.nbytes
            while self.n_bytes > self.max_bytes and len(self._grids) > 1:
                _, old = self._grids.popitem(last=False)
                self.n_bytes -= old.nbytes


class ThumbnailReader:
    """Thumbnails from the store, resized to a grid; `chunk` frames per short connection
    (read-only ones with `read_only`, for a process that never writes). With a `cache`, grids
    decoded before are taken from it; the chunks come out the same (frames in frame_id order
    within each chunk), so what is computed from them is too."""

    def __init__(self, db: Path, chunk: int = 1024, workers: int | None = None,
                 read_only: bool = False, cache: GridCache | None = None):
        self.db = Path(db)
        self.chunk = chunk
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.read_only = read_only
        self.cache = cache

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        with store.connect(self.db, read_only=self.read_only) as con:
            return store_frames.thumbnail_aspect(con, frame_ids)

    def grids(self, frame_ids, size):
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        with ThreadPoolExecutor(self.workers) as pool:  # decoding releases the GIL
            for start in range(0, len(frame_ids), self.chunk):
                part = frame_ids[start:start + self.chunk]
                found = self._read(part, size, pool)
                if found:
                    ids = sorted(found)  # the store's order (frame_id)
                    yield (start + _positions(part, np.array(ids, dtype=np.int64)),
                           np.stack([found[i] for i in ids]))

    def _read(self, part: np.ndarray, size: tuple[int, int], pool) -> dict[int, np.ndarray]:
        """The decoded grids of the frames of `part` that have a readable thumbnail."""
        found: dict[int, np.ndarray] = {}
        if self.cache is not None:
            for frame_id in map(int, part):
                grid = self.cache.get(frame_id, size)
                if grid is not None:
                    found[frame_id] = grid
        missing = [int(i) for i in part if int(i) not in found]
        if not missing:
            return found
        with store.connect(self.db, read_only=self.read_only) as con:
            thumbs = store_frames.thumbnails(con, missing)
        decoded = pool.map(lambda b: decode_thumbnail(b, size), thumbs["jpeg"])
        for frame_id, grid in zip(thumbs["frame_id"].tolist(), decoded):
            if grid is not None:
                found[frame_id] = grid
                if self.cache is not None:
                    self.cache.put(frame_id, size, grid)
        return found


class ArrayReader:
    """Images held in memory (frame_id -> HxWx3 array); resized to the grid like thumbnails."""

    def __init__(self, images: dict[int, np.ndarray]):
        self.images = images

    def aspect(self, frame_ids):
        shapes = [self.images[int(i)].shape for i in frame_ids if int(i) in self.images]
        return float(np.median([w / h for h, w, *_ in shapes])) if shapes else None

    def grids(self, frame_ids, size):
        have = [p for p, i in enumerate(frame_ids) if int(i) in self.images]
        if have:
            grids = [resize_rgb(Image.fromarray(np.asarray(self.images[int(frame_ids[p])],
                                                            np.uint8)), size) for p in have]
            yield np.array(have, dtype=np.int64), np.stack(grids)


class UploadReader:
    """Thumbnails held in memory (frame_id -> JPEG bytes, as ingest stores them) for frames
    the store does not have, and `stored`'s grids for every other frame. The same bytes decode
    to the same grid (`decode_thumbnail`), so an upload is seen as it would be once ingested."""

    def __init__(self, thumbnails: dict[int, bytes], stored: GridReader):
        self.thumbnails = thumbnails
        self.stored = stored

    def aspect(self, frame_ids):
        return self.stored.aspect(frame_ids)

    def grids(self, frame_ids, size):
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        mine = np.array([int(i) in self.thumbnails for i in frame_ids], dtype=bool)
        if (~mine).any():
            others = np.flatnonzero(~mine)
            for pos, grids in self.stored.grids(frame_ids[others], size):
                yield others[pos], grids
        held = [(p, decode_thumbnail(self.thumbnails[int(frame_ids[p])], size))
                for p in np.flatnonzero(mine)]
        held = [(p, g) for p, g in held if g is not None]
        if held:
            yield np.array([p for p, _ in held], dtype=np.int64), np.stack([g for _, g in held])


def _positions(part: np.ndarray, found: np.ndarray) -> np.ndarray:
    lookup = {int(f): p for p, f in enumerate(part)}
    return np.array([lookup[int(f)] for f in found], dtype=np.int64)


def decode_thumbnail(jpeg: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """A thumbnail as a uint8 RGB grid of `size` (width, height); None when it is unreadable
    (a stored thumbnail is written by ingest, so this only happens to a damaged store).

    libjpeg-turbo decodes at the smallest DCT scale that is at least `size` (simplejpeg: the
    same pixels as Pillow's draft mode, at half its CPU, and without the GIL, which Pillow
    holds while it opens a file); what simplejpeg refuses goes to Pillow."""
    try:
        grid = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", min_width=size[0],
                                      min_height=size[1])
    except ValueError:
        grid = None
    try:
        if grid is not None:
            return grid if grid.shape[1::-1] == size else resize_rgb(Image.fromarray(grid), size)
        image = Image.open(io.BytesIO(jpeg))
        image.draft("RGB", size)
        return resize_rgb(image, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def resize_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB grid; no conversion or resize when the draft decode already gave it (both
    would only copy)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.BILINEAR)
    return np.asarray(image)


def grid_size(aspect: float | None, width: int) -> tuple[int, int]:
    """(width, height) of the grid for images of this aspect ratio."""
    aspect = aspect if aspect and np.isfinite(aspect) and aspect > 0 else 16 / 9
    return width, int(min(4 * width, max(8, round(width / aspect))))
