"""The archive mosaic: one row per camera-clock day, one cell per hour, each cell the per-pixel
median of that hour's thumbnails; built while `analyze` runs and written with the run as one PNG.

Each thumbnail is decoded at most once for it, and its cost is bounded:
- a cell's median is taken over at most `MAX_PER_CELL` of its frames, spread evenly over the
  hour (all of them when the hour has fewer);
- `MosaicBuilder.tap(reader)` wraps the pixel reader the first pixel detector reads
  (`pipeline.pixels`; `alignment` by default, which decodes every frame), so the cells fill
  from the grids it decodes anyway, averaged down to the cell's size;
- `finish(reader)` decodes only the chosen frames no detector read (all of them when no
  detector looks at pixels; callers pass a reader that takes `READ_CHUNK` thumbnails per
  connection), straight at the cell's size (libjpeg-turbo's DCT scaling decodes
  a 256-px thumbnail at 1/8 scale, to 32 px);
- memory holds the atlas and the cells still waiting for frames: `alignment` reads frames in
  frame order (ingest's order: time order for a camera's numbered files), `background` a few
  days at a time in time order, so a cell completes soon after it starts.

`finish` also lists the cells to outline: those at least half of whose frames are in incidents
(`pipeline.incidents`; so never a night hour).

The atlas (`store.aggregates.Mosaic`): RGBA, one row of 24 cells per day that has frames (in
order; `Mosaic.days` is each row's first day), each cell `CELL_WIDTH` pixels wide and as tall
as the thumbnails' aspect makes it, or less so that the atlas stays within `ATLAS_MAX_HEIGHT`
pixels (a month of days: 17 pixels each; three months: 5; a year: 1). Past `ATLAS_MAX_HEIGHT`
days a row holds consecutive days (two years: one or two per one-pixel row; 14 years: ten),
so the atlas, and drawing it, costs the same for any archive. An hour without frames is
transparent.
"""

from __future__ import annotations

import io
import threading
import time
from datetime import date
from typing import Iterator

import numpy as np
from PIL import Image

from pipeline.pixels import GridReader, grid_size
from store.aggregates import Mosaic

CELL_WIDTH = 32
MAX_PER_CELL = 12
ATLAS_MAX_HEIGHT = 512
HOURS = 24
READ_CHUNK = 8192  # thumbnails per connection when `finish` reads them (opening one costs)


class MosaicBuilder:
    """Collects cells from the grids a reader yields; `finish` makes the atlas.

    `frame_ids` (ascending) and `local_time` (camera clock, datetime64, NaT allowed) describe
    the run's frames; `aspect` is the thumbnails' typical width / height."""

    def __init__(self, frame_ids: np.ndarray, local_time: np.ndarray, aspect: float | None):
        self.frame_ids = np.asarray(frame_ids, dtype=np.int64)
        if np.any(np.diff(self.frame_ids) <= 0):
            raise ValueError("the mosaic needs the run's frame ids in ascending order")
        local = np.asarray(local_time, dtype="datetime64[ns]")
        timed = ~np.isnat(local)
        day = local.astype("datetime64[D]")
        days = np.unique(day[timed])
        rows = max(1, min(len(days), ATLAS_MAX_HEIGHT))
        row_of_day = np.arange(len(days)) * rows // max(1, len(days))
        self.days = (
            days[np.r_[0, np.flatnonzero(np.diff(row_of_day)) + 1]] if len(days) else days
        )  # each row's first day
        row = (
            row_of_day[np.minimum(np.searchsorted(days, day), max(0, len(days) - 1))]
            if len(days)
            else np.zeros(len(day), np.int64)
        )
        hour = (local - day) // np.timedelta64(1, "h")
        self.slot = np.where(timed, row * HOURS + hour, -1).astype(np.int64)
        self.wanted = timed & _spread(self.slot, local, MAX_PER_CELL)
        self.waiting = np.bincount(self.slot[self.wanted], minlength=rows * HOURS)
        self.seen = np.zeros(len(self.frame_ids), bool)
        self.cell = grid_size(aspect, CELL_WIDTH)  # (width, height) at the thumbnails' aspect
        self.out_height = int(max(1, min(self.cell[1], ATLAS_MAX_HEIGHT // rows)))
        self.atlas = np.zeros((rows * self.out_height, HOURS * CELL_WIDTH, 4), np.uint8)
        self._cells: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.n_frames = 0
        self.n_decoded = 0
        self.tap_seconds = 0.0

    def tap(self, reader: GridReader) -> GridReader:
        """`reader`, with every grid it yields also handed to the mosaic."""
        return _Tap(reader, self)

    def take(self, frame_ids: np.ndarray, grids: np.ndarray) -> None:
        """Grids of some frames (any size): the chosen frames not seen yet go into their cells."""
        started = time.perf_counter()
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        where = np.minimum(np.searchsorted(self.frame_ids, frame_ids), len(self.frame_ids) - 1)
        known = self.frame_ids[where] == frame_ids
        with self._lock:
            pick = known & self.wanted[where] & ~self.seen[where]
            pos = where[pick]
            self.seen[pos] = True
        if len(pos):
            cells = _downsample(np.asarray(grids)[pick], self.cell).round().astype(np.uint8)
            done = []
            with self._lock:
                for slot, cell in zip(self.slot[pos], cells):
                    self._cells.setdefault(int(slot), []).append(cell)
                    self.waiting[slot] -= 1
                    if self.waiting[slot] == 0:
                        done.append((int(slot), self._cells.pop(int(slot))))
                self.n_frames += len(pos)
            self._place(done)
        with self._lock:
            self.tap_seconds += time.perf_counter() - started

    def finish(self, reader: GridReader, incident_ids: np.ndarray | None = None) -> Mosaic:
        """Decode the chosen frames no detector read, close every cell, encode the atlas; the
        cells to outline are those at least half of whose frames are in `incident_ids`."""
        started = time.perf_counter()
        missing = self.frame_ids[self.wanted & ~self.seen]
        before = self.n_frames
        for pos, grids in reader.grids(missing, self.cell):
            self.take(missing[pos], grids)
        self.n_decoded = self.n_frames - before
        self._place(list(self._cells.items()))  # cells missing an unreadable thumbnail
        self._cells.clear()
        buffer = io.BytesIO()
        Image.fromarray(self.atlas, "RGBA").save(buffer, "PNG", compress_level=6)
        days = [date.fromisoformat(str(d)) for d in self.days]
        return Mosaic(
            buffer.getvalue(),
            days,
            CELL_WIDTH,
            self.out_height,
            self._outlined(incident_ids),
            self.n_frames,
            self.n_decoded,
            {"tap": round(self.tap_seconds, 3), "finish": round(time.perf_counter() - started, 3)},
        )

    def _outlined(self, incident_ids: np.ndarray | None) -> list[int]:
        """Cells (row * 24 + hour) at least half of whose frames are in `incident_ids`."""
        if incident_ids is None or not len(incident_ids):
            return []
        size = len(self.waiting)
        timed = self.slot >= 0
        frames = np.bincount(self.slot[timed], minlength=size)
        ids = np.asarray(incident_ids, dtype=np.int64)
        where = np.minimum(np.searchsorted(self.frame_ids, ids), len(self.frame_ids) - 1)
        slots = self.slot[where[self.frame_ids[where] == ids]]
        inside = np.bincount(slots[slots >= 0], minlength=size)
        return np.flatnonzero((inside > 0) & (2 * inside >= frames)).tolist()

    def _place(self, cells: list[tuple[int, list[np.ndarray]]]) -> None:
        """Put finished cells (slot, member grids) into the atlas: the medians of cells with
        the same number of members are taken in one call."""
        by_size: dict[int, list[tuple[int, list[np.ndarray]]]] = {}
        for slot, members in cells:
            by_size.setdefault(len(members), []).append((slot, members))
        for group in by_size.values():
            stacks = np.stack([np.stack(members) for _, members in group])
            medians = _median(stacks).round().astype(np.uint8)
            for (slot, _), median in zip(group, medians):
                if median.shape[0] != self.out_height:
                    median = np.asarray(
                        Image.fromarray(median).resize((CELL_WIDTH, self.out_height), Image.BOX)
                    )
                row, hour = divmod(slot, HOURS)
                y, x = row * self.out_height, hour * CELL_WIDTH
                self.atlas[y : y + self.out_height, x : x + CELL_WIDTH, :3] = median
                self.atlas[y : y + self.out_height, x : x + CELL_WIDTH, 3] = 255


class _Tap:
    """A pixel reader that hands every chunk it yields to a `MosaicBuilder` too."""

    def __init__(self, reader: GridReader, builder: MosaicBuilder):
        self.reader, self.builder = reader, builder

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        return self.reader.aspect(frame_ids)

    def grids(self, frame_ids, size) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        for pos, grids in self.reader.grids(frame_ids, size):
            self.builder.take(frame_ids[pos], grids)
            yield pos, grids


def _spread(slot: np.ndarray, local: np.ndarray, k: int) -> np.ndarray:
    """True for at most `k` frames of each slot, spread evenly over the slot in time."""
    keep = np.zeros(len(slot), bool)
    rows = np.flatnonzero(slot >= 0)
    if not len(rows):
        return keep
    rows = rows[np.lexsort((local[rows], slot[rows]))]
    groups = slot[rows]
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    sizes = np.diff(np.r_[starts, len(rows)])
    rank = np.arange(len(rows)) - np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    # the first member of each of k equal parts of the slot (every member when it has <= k)
    keep[rows] = (rank == 0) | (rank * k // size != (rank - 1) * k // size)
    return keep


def _median(stacks: np.ndarray) -> np.ndarray:
    """np.median over axis 1 of [cells, members, ...] (the mean of the middle two for an even
    count), without its per-call overhead."""
    ordered = np.sort(stacks, axis=1)
    middle = ordered.shape[1] // 2
    if ordered.shape[1] % 2:
        return ordered[:, middle]
    return (ordered[:, middle - 1].astype(np.float32) + ordered[:, middle]) / 2


def _downsample(grids: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
    """Grids [m, H, W, 3] as cells [m, h, w, 3] (float): block means when the sizes divide,
    else a box resize per grid."""
    width, height = cell
    m, h, w = grids.shape[:3]
    if (h, w) == (height, width):
        return grids.astype(np.float32)
    if h % height == 0 and w % width == 0 and grids.dtype == np.uint8 and h // height <= 257:
        return _block_means(grids, height, width)
    if h % height == 0 and w % width == 0:
        blocks = grids.reshape(m, height, h // height, width, w // width, 3)
        return blocks.mean(axis=(2, 4), dtype=np.float32)
    return np.stack(
        [
            np.asarray(Image.fromarray(np.asarray(g, np.uint8)).resize(cell, Image.BOX), np.float32)
            for g in grids
        ]
    )


def _block_means(grids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Block means of uint8 grids [m, H, W, 3] into [m, height, width, 3] float32: each block's
    rows summed in uint16 (at most 257 rows of 255 fit), then its columns in float32 (sums of
    integers under 2^24: exact), over the block's size. The very floats of
    `mean(axis=(2, 4), dtype=float32)`, whose sums are as exact, at a third of its time (the
    mosaic's tap at 750k frames)."""
    m, h, w = grids.shape[:3]
    tall, wide = h // height, w // width
    rows = grids.reshape(m, height, tall, w * 3)
    summed = rows[:, :, 0].astype(np.uint16)
    for k in range(1, tall):
        summed += rows[:, :, k]
    cols = summed.reshape(m, height, width, wide, 3)
    total = cols[:, :, :, 0].astype(np.float32)
    for k in range(1, wide):
        total += cols[:, :, :, k]
    total /= np.float32(tall * wide)
    return total
