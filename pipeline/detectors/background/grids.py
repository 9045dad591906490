"""What the background detector computes on pixel grids: log-RGB, edge maps, chunks by class.

Grids are small RGB images of frames ([n, height, width, 3], 0..255) read through
`pipeline.pixels`. In log-RGB, with each frame's per-channel median removed, a change of light
becomes an offset and cancels; the edge map (of log grey) shows where the scene's structure is,
whatever the light level.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

LOG_OFFSET = 8.0  # log(rgb + 8): dark pixels' sensor noise does not become huge log steps
SUBSAMPLE = 5  # every 5th pixel estimates a frame's medians and 90th percentile


def log_rgb(grids: np.ndarray) -> np.ndarray:
    """Flattened log-RGB with each frame's per-channel median removed (light level cancels)."""
    grids = np.asarray(grids)
    n = len(grids)
    if grids.dtype == np.uint8:  # a table of the 256 logs: the same float32s, 4x faster
        logs = _LOG_OF[grids]
    else:
        logs = np.asarray(grids, np.float32) + np.float32(LOG_OFFSET)
        np.log(logs, out=logs)
    rgb = logs.reshape(n, -1, 3)
    rgb -= _channel_medians(grids, rgb)[:, None, :]
    return logs.reshape(n, -1)


_LOG_OF = np.log(np.arange(256, dtype=np.float32) + np.float32(LOG_OFFSET))  # uint8 -> log


def _channel_medians(grids: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """[n, 3] median log value of every 5th pixel (a median needs no more), as `np.median`
    gives it. uint8 grids select their middle values on the bytes (log is increasing, so they
    are the same pixels; a byte select is twice as fast), then take the log of just those."""
    pick = grids if grids.dtype == np.uint8 else logs
    some = pick.reshape(len(pick), -1, 3)[:, ::SUBSAMPLE].transpose(0, 2, 1)
    some = np.ascontiguousarray(some)  # the selection runs along a contiguous last axis
    if pick is logs:
        return np.median(some, axis=2, overwrite_input=True)
    half = some.shape[2] // 2
    kth = [half - 1, half] if some.shape[2] % 2 == 0 else [half]
    middle = np.partition(some, kth, axis=2)[:, :, kth].astype(np.float32)
    middle += np.float32(LOG_OFFSET)
    return np.log(middle, out=middle).mean(axis=2)  # np.median's mean of the middle two


_GREY_LOG = np.log(np.arange(766, dtype=np.float32) / 3 + LOG_OFFSET)  # R + G + B -> log grey


def edge_map(grids: np.ndarray) -> np.ndarray:
    """[n, height - 2, width - 2] edge strength |d/dx| + |d/dy| of each frame's log grey
    (central differences): where the scene's structure is, whatever the light level."""
    grids = np.asarray(grids)
    if grids.dtype == np.uint8:
        total = grids[..., 0].astype(np.uint16)
        total += grids[..., 1]
        total += grids[..., 2]
        grey = _GREY_LOG[total]
    else:
        grey = np.log(np.clip(grids, 0, 255).astype(np.float32).mean(axis=3) + LOG_OFFSET)
    edges = np.abs(grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2])
    edges += np.abs(grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1])
    return edges


def by_class(classes: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(class, positions) for each class among `classes`."""
    for name in np.unique(classes):
        yield name, np.flatnonzero(classes == name)


def split_chunks(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], size: int = 128
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, grids) chunks cut into pieces of at most `size` frames, so that threads
    share out the work of even one chunk."""
    for pos, grids in chunks:
        for lo in range(0, len(pos), size):
            yield pos[lo : lo + size], grids[lo : lo + size]
