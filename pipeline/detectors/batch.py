"""The frames as detectors see them (`FrameBatch`), and the time helpers several detectors share.

A batch holds one row per frame in the same order everywhere: the frame ids, the run's PCA
vectors, two clocks (`order_time` for order in time, `local_time` for the camera's time of
day and date), the frame statistics ingest computed, the daylight class, the sun's position
(when the camera's place is known), each frame's nearest fit frames (attached by
`pipeline.neighbors.NeighborIndex`), a pixel reader (`pipeline.pixels`) and, when the per-frame
passes over the pixels are to run elsewhere, a `FrameSpread` (`analyze --executor ray`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pipeline.pixels import GridReader


STATS = ("mean_luma", "contrast", "sharpness", "colorfulness", "local_contrast")
# `sharpness_cells` (the frames row's list, 3 x 3 cells row by row) as one stats column a cell
N_CELLS = 9
CELL_STATS = tuple(f"sharpness_cell_{i}" for i in range(N_CELLS))


def cell_columns(cells: pd.Series) -> pd.DataFrame:
    """The frames rows' `sharpness_cells` lists as `CELL_STATS` columns (NaN where a frame has
    none: ingested before it was measured, or a thumbnail too small to cut)."""
    table = np.full((len(cells), N_CELLS), np.nan)
    for i, value in enumerate(cells):
        if isinstance(value, (list, tuple, np.ndarray)):  # else None, NaN or NA: not measured
            value = np.asarray(value, dtype=float)
            if value.shape == (N_CELLS,):
                table[i] = value
    return pd.DataFrame(table, columns=list(CELL_STATS), index=cells.index)


class FrameSpread(Protocol):
    """Runs a detector's per-frame pass somewhere else (`pipeline.ray_executor.RayFrameSpread`:
    on a Ray cluster). `run(fn, batch)` returns what `fn(batch)` would: an array with one row
    per frame of `batch`, in its order. It calls `fn` on parts of the batch (`FrameBatch.light`,
    each a run of whole camera-clock days, with a pixel reader of its own), so `fn`'s row for a
    frame must depend only on that frame and the frames of its days and their neighbours that
    `fn` reads itself (the `background` detector's references), never on which other frames
    came with it. `fn` and the detector it belongs to must be picklable."""

    def run(self, fn: Callable[["FrameBatch"], np.ndarray], batch: "FrameBatch") -> np.ndarray: ...


@dataclass
class FrameBatch:
    """Frames as the detectors see them (rows in the same order everywhere).

    `z` is the run's PCA space; `order_time` orders frames in time (UTC when known, else camera
    time) and `local_time` is the camera wall clock (time of day, date); both datetime64[ns] with
    NaT allowed. `stats` holds mean_luma, contrast, sharpness, colorfulness, local_contrast and
    each cell's sharpness (`CELL_STATS`), NaN allowed. `sun` is the sun's elevation and azimuth in degrees ([n, 2], NaN where the
    time is unknown), or None when the camera's place is not known.
    `nn_dist`/`nn_idx` are each frame's nearest fit frames (itself excluded), indexes into the
    fit batch, filled by `NeighborIndex.attach`. `daylight` is 'day', 'twilight', 'night' or
    None per frame; `pixels` reads the frames' images (`pipeline.pixels.GridReader`) for the
    detectors that look at pixels; without one they cannot score. `spread`, when set, runs
    the pixel detectors' per-frame passes elsewhere (`FrameSpread`); a part of the batch
    (`take`, `light`) has none. `regions`, for a model whose vectors describe regions of the
    view, is each region's own PCA space (one float32 array [n, dims] per region,
    `pipeline.projection.RegionProjection`); None otherwise.
    """

    frame_ids: np.ndarray
    z: np.ndarray
    order_time: np.ndarray
    local_time: np.ndarray
    stats: pd.DataFrame
    nn_dist: np.ndarray | None = None
    nn_idx: np.ndarray | None = None
    daylight: np.ndarray | None = None
    pixels: "GridReader | None" = None
    sun: np.ndarray | None = None
    spread: FrameSpread | None = None
    regions: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.frame_ids)

    @functools.cached_property
    def paced(self) -> np.ndarray:
        """Which frames are at the camera's usual pace (`usual_pace`), found once per batch
        for the detectors that learn a density (`lof`, `regions`)."""
        return usual_pace(self.order_time)

    def take(self, rows: np.ndarray) -> "FrameBatch":
        """The frames at positions `rows`, as a batch of their own (same pixels reader, no
        spread)."""

        def pick(values):
            return None if values is None else values[rows]

        return FrameBatch(
            self.frame_ids[rows],
            self.z[rows],
            self.order_time[rows],
            self.local_time[rows],
            self.stats.iloc[rows].reset_index(drop=True),
            pick(self.nn_dist),
            pick(self.nn_idx),
            pick(self.daylight),
            self.pixels,
            pick(self.sun),
            regions=None if self.regions is None else [r[rows] for r in self.regions],
        )

    def light(self, rows: np.ndarray) -> "FrameBatch":
        """The frames at positions `rows` with what a pass over their pixels reads (ids, clocks,
        statistics, daylight, sun) and without the heavy rest (no vectors, neighbours, pixel
        reader or spread): what travels to a cluster's worker, which gives it a reader."""
        return FrameBatch(
            self.frame_ids[rows],
            np.zeros((len(rows), 0), np.float32),
            self.order_time[rows],
            self.local_time[rows],
            self.stats.iloc[rows].reset_index(drop=True),
            daylight=None if self.daylight is None else self.daylight[rows],
            sun=None if self.sun is None else self.sun[rows],
        )

    @classmethod
    def from_frames(
        cls,
        frame_ids: np.ndarray,
        z: np.ndarray,
        frames: pd.DataFrame,
        pixels: "GridReader | None" = None,
        lat: float | None = None,
        lon: float | None = None,
    ) -> "FrameBatch":
        """Build from PCA vectors and `store.analysis.load_frames` rows (same frame ids); with
        the camera's `lat` and `lon`, the sun's position at each frame's UTC time."""
        frames = frames.set_index("frame_id").reindex(frame_ids)
        local = _to_naive_ns(frames["taken_at"])
        utc = _to_naive_ns(frames["taken_at_utc"])
        order = np.where(np.isnat(utc), local, utc)
        stats = frames.reindex(columns=list(STATS)).astype(float)
        if "sharpness_cells" in frames:
            stats = stats.join(cell_columns(frames["sharpness_cells"]))
        else:
            stats = stats.reindex(columns=[*STATS, *CELL_STATS])
        daylight = frames["daylight"].to_numpy(object) if "daylight" in frames else None
        sun = None
        if lat is not None and lon is not None:
            from pipeline.daylight import sun_position

            sun = np.column_stack(sun_position(pd.DatetimeIndex(utc), lat, lon))
        return cls(
            np.asarray(frame_ids, dtype=np.int64),
            np.ascontiguousarray(z, np.float32),
            order,
            local,
            stats.reset_index(drop=True),
            daylight=daylight,
            pixels=pixels,
            sun=sun,
        )


# A frame taken less than this share of the camera's usual interval after the last frame kept
# is a burst's extra (`usual_pace`).
BURST_SHARE = 0.5


def usual_pace(order_time: np.ndarray) -> np.ndarray:
    """Which frames are at the camera's usual pace (bool per frame): in time order, a frame
    taken at least `BURST_SHARE` of the usual interval (the median between consecutive frames)
    after the last frame kept. A camera that took one frame an hour and, for two hours one
    morning, one a minute (its owner setting it up again, a motion trigger) keeps one of the
    burst's frames each half hour; a camera at its own steady pace, jitter and gaps and all,
    keeps every frame. Frames without a time are kept.

    A local density (`lof`, `regions`) is learned from these alone: the burst's 100
    near-copies are the densest place in the archive, so the ordinary frames beside them in
    the vector space, whose nearest neighbours the copies become, are far less dense than
    their neighbours and rank as the rarest frames of all (growlab: 06-08..06-13, the days
    around its burst, were `lof`'s top 15). Every frame is still scored."""
    keep = np.ones(len(order_time), dtype=bool)
    timed = np.flatnonzero(~np.isnat(order_time))
    if len(timed) < 3:
        return keep
    order = timed[np.argsort(order_time[timed], kind="stable")]
    t = order_time[order].astype("datetime64[ns]").astype(np.int64)
    gaps = np.diff(t)
    usual = float(np.median(gaps))
    if usual <= 0:  # most frames share their time with another: no pace to keep to
        return keep
    least = BURST_SHARE * usual
    if (gaps >= least).all():
        return keep
    last = t[0]
    for row, when in zip(order[1:], t[1:]):
        if when - last >= least:
            last = when
        else:
            keep[row] = False
    return keep


def _to_naive_ns(column: pd.Series) -> np.ndarray:
    values = pd.to_datetime(column)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[ns]")


def hour_of_day(local: np.ndarray) -> np.ndarray:
    """Camera-clock hour of day (0..23); NaT gives -1."""
    known = ~np.isnat(local)
    hours = np.full(local.shape, -1, dtype=np.int64)
    hours[known] = (local[known] - local[known].astype("datetime64[D]")) // np.timedelta64(1, "h")
    return hours


def day_and_minute(local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-clock day number and minute of day; NaT gives day -1 and minute NaN."""
    known = ~np.isnat(local)
    days = np.where(known, local.astype("datetime64[D]").astype(np.int64), -1)
    minutes = (local - local.astype("datetime64[D]")) / np.timedelta64(1, "m")
    return days, np.where(known, minutes, np.nan)


def day_blocks(
    rows: np.ndarray, row_days: np.ndarray, max_days: int | None, size: int | None = 1024
):
    """Blocks of at most `size` rows (sorted by day) spanning at most `max_days` days, so each
    block's candidates are its days +- max_days (about 3 x max_days days, not every day)."""
    if not len(rows):
        return
    if max_days is None:
        keys = np.zeros(len(rows), np.int64)
    else:
        keys = (row_days - row_days[0]) // max_days
    edges = np.flatnonzero(np.diff(keys)) + 1
    size = size or max(1, len(rows))
    for start, stop in zip(np.r_[0, edges], np.r_[edges, len(rows)]):
        for s in range(start, stop, size):
            yield rows[s : min(stop, s + size)]


def day_groups(local: np.ndarray, size: int) -> list[np.ndarray]:
    """Positions of the frames in groups of whole camera-clock days, in time order, each of
    about `size` frames (a group ends at the first day boundary at or past `size`: a day of
    more frames stays whole), the frames of no known day in a group of their own; every
    position in exactly one group, ascending within it."""
    days, _ = day_and_minute(np.asarray(local, dtype="datetime64[ns]"))
    by_day = np.argsort(days, kind="stable")
    dated = by_day[days[by_day] >= 0]
    size = max(1, int(size))
    starts = np.r_[0, np.flatnonzero(np.diff(days[dated])) + 1]  # each day's first row
    groups: list[np.ndarray] = []
    lo = 0
    while lo < len(dated):
        at = np.searchsorted(starts, lo + size)
        hi = int(starts[at]) if at < len(starts) else len(dated)
        groups.append(np.sort(dated[lo:hi]))
        lo = hi
    undated = by_day[days[by_day] < 0]
    if len(undated):
        groups.append(np.sort(undated))
    return groups


def daylight_classes(batch: FrameBatch) -> np.ndarray:
    """Each frame's daylight class ('day', 'twilight', 'night'), 'unknown' where not known."""
    if batch.daylight is None:
        return np.full(len(batch), "unknown", dtype=object)
    return np.array([d if isinstance(d, str) else "unknown" for d in batch.daylight], dtype=object)
